"""The live core, pure (no Ray, no I/O): what a feature shard holds and how batches reach it.

``shard`` (per-symbol rolling state, aggregation, feature rows), ``routing`` (which shard
owns a symbol), ``keyindex`` (Arrow hash look-ups of series keys), ``sequencing`` (batches
admitted in order, exactly once), ``checkpoint`` (atomic snapshot files), ``events``
(prediction rows), ``signals`` (probability -> LONG/SHORT/NEUTRAL, trend words) and
``outcomes`` (live scoring of earlier predictions). ``orchestrator.actors`` runs them.
"""
