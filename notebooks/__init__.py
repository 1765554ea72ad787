"""The teaching notebooks; `python -m notebooks.run` re-executes them all in place."""
