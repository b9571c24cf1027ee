"""Ray actors: thin shells that run the pure pipeline logic and pass data between stages."""

import ray

# Methods called every second or more (a batch, a tick, a status round, a stream poll): Ray's
# GCS would keep an event per call until its cap (100,000 by default), growing ~1.4 MiB a
# minute in the 1,000-symbol soak. The actors and their errors still show in the dashboard.
every_batch = ray.method(enable_task_events=False)
