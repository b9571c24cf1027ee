"""Evaluation of backfilled predictions: metrics beside naive baselines, calibration, a
signal-following strategy beside buy-and-hold, and the Markdown/PNG report."""
