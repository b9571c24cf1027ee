"""A node's death on a four-node cluster loses nothing (``tests/e2e/multi_node.py``): the
node hosting a feature shard, or the sink, removed mid-replay of real candles; the pipeline
carries on on the surviving nodes and the log holds each prediction once, without gaps.
State, log, write-ahead logs and models live on the suite's S3 server, as on a cluster
whose nodes share no disk.

Each case runs in its own process: it starts its own Ray cluster, which cannot share a
process with the integration tests' one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from orchestrator import PROJECT_ROOT


@pytest.mark.timeout(900)  # a replay through an S3 server: about 4 minutes a case
@pytest.mark.parametrize("remove", ["shard", "sink"])
def test_a_removed_node_loses_no_prediction_and_repeats_none(shared_data, s3_server, remove):
    store = f"s3://tickcast/multi-node-{remove}-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.e2e.multi_node",
            "--data",
            str(shared_data),
            "--store",
            store,
            "--remove",
            remove,
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **s3_server},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))  # the figures: placement, memory, CPU, recovery
    processes = result["processes"]
    victim = "shard-0" if remove == "shard" else "sink"
    assert victim in result["actors_lost"]
    assert processes["pipeline"]["node"] not in {
        processes[a]["node"] for a in processes if a != "pipeline"
    }
    assert result["nodes_used"] >= 3  # the actors spread over the workers
    assert result["store"] == store and result["models_dir"].startswith("s3://")
    assert result["rows"] > 2000 and result["outcomes"] > 1000
    assert result["duplicates"] == 0 and result["outcome_duplicates"] == 0
    assert result["unscored"] == 0  # every prediction settled in the replay was scored
    assert result["gaps"] == {}
    # Every feed replays the same minutes: each series ends with as many predictions as the
    # others (none lost at the end either).
    assert len(result["per_series"]) == 5 and len(set(result["per_series"].values())) == 1
