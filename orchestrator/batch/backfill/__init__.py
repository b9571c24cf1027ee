"""Backfill: predictions of history with the live pipeline's features, models and events.

``sources`` finds and reads candle folders; ``features`` computes the rows a model sees
live (batch twin, warm mask, realized labels); ``predict`` builds prediction and outcome
rows with the live event builder; ``writer`` stores them idempotently beside the live
log; ``record`` is the completion record; ``job`` runs the stages, in process or through
Ray Data (``ray_data``, the only module here that imports Ray).
"""
