"""Replay evaluation (EVALUATION.md): train on the first 80 % of a time-sorted event
log, replay the last 20 % through the pipeline's state code, and rank the full
catalogue for each interaction with every variant side by side.

Nothing here imports TensorFlow at module import time; the neural variants load
the models package lazily.
"""
