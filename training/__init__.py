"""The pieces of `train.py` that are not the loop itself: schedules, optimizer groups, mixing, EMA,
distributed set-up and process-level runtime settings."""
