"""Metrics, pictures and Grad-CAM for `evaluate.py`."""
