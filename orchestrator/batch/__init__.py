"""Batch jobs over history: ``backfill`` (predictions with the live code, through Ray Data
or in process) and ``evaluation`` (the report beside naive baselines)."""
