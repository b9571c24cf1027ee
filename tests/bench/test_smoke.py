"""Every benchmark runs in smoke mode (``--smoke``: tiny sizes, no target judged), so a changed
signature fails here rather than in the next measurement.

The pure-Python ones run in this process; those that start Ray or Serve run as
``python -m orchestrator.cli.main bench NAME --smoke`` in a subprocess (Ray then starts and
stops with it, and ``tests/unit``'s ban on ``ray.init`` does not apply). Each test checks
the exit code, the table's header row and that it has data rows.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.cli.main import BENCHMARKS

pytestmark = pytest.mark.bench


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table(output: str, headers: tuple[str, ...]) -> list[list[str]]:
    """The data rows of the Markdown table in ``output`` whose header row is ``headers``."""
    lines = output.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and tuple(cells(line)) == headers:
            assert set(lines[i + 1]) <= set("|-: "), f"no rule under the header: {lines[i + 1]}"
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            return rows
    raise AssertionError(f"no table with the header {headers} in:\n{output}")


def assert_table(output: str, headers: tuple[str, ...], min_rows: int = 1) -> list[list[str]]:
    rows = table(output, headers)
    assert len(rows) >= min_rows, f"{len(rows)} rows under {headers}:\n{output}"
    assert all(len(r) == len(headers) for r in rows), rows
    return rows


def run_bench(name: str, *args: str, timeout: float) -> str:
    """``tickcast bench NAME --smoke ARGS`` in a subprocess; its stdout (exit code 0)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    command = [sys.executable, "-m", "orchestrator.cli.main", "bench", name, "--smoke", *args]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{' '.join(command[2:])} exited with {done.returncode}\n"
        f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
    assert "SMOKE RUN" in done.stdout.splitlines()[0], done.stdout[:500]
    return done.stdout


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_benchmark_has_main_and_smoke(name, capsys):
    module = importlib.import_module(BENCHMARKS[name][0])
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert "--smoke" in capsys.readouterr().out


# --- in this process: no Ray ------------------------------------------------------------------


def test_features(capsys):
    from orchestrator.bench import features

    assert features.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    rows = assert_table(
        out, ("case", "ours /s", "us each", "pandas /s", "us each", "speedup", "unit"), 5
    )
    assert rows[0][0] == "incremental, 1 symbol(s)/shard"
    assert "targets: not judged" in out


def test_models(capsys, data_args):
    from orchestrator.bench import models

    assert models.main(["--smoke", *data_args]) == 0
    rows = assert_table(
        capsys.readouterr().out,
        ("model", "batch", "ONNX Runtime us/row", "native us/row", "native / ONNX"),
        3 * len(models.MODELS),
    )
    assert {r[1] for r in rows} == {"1", "64", "1,024"}


def test_feeds_without_ray(capsys, tmp_path):
    """No data under ``--data``: the archive rows parse a small synthetic zip."""
    from orchestrator.bench import feeds

    assert feeds.main(["--smoke", "--no-replay", "--data", str(tmp_path)]) == 0
    rows = assert_table(
        capsys.readouterr().out, ("workload", "ours c/s", "pandas c/s", "ratio", "target", "met"), 5
    )
    assert "synthetic zip" in rows[0][0]
    assert rows[-1][1] == "skipped (--no-replay)"


def test_history(capsys, tmp_path):
    from orchestrator.bench import history

    assert history.main(["--smoke", "--dir", str(tmp_path / "log")]) == 0
    out = capsys.readouterr().out
    headers = ("log", "page", "reader", "n", "p50 ms", "p99 ms", "max ms", "peak RSS MiB")
    rows = assert_table(out, (*headers, "files", "most in a folder"), 10)
    readers = {r[2] for r in rows}
    assert readers == {"paged (this)", "previous"}, readers
    assert {r[0] for r in rows} == {"1 d, as written", "3 d"}
    written = assert_table(out, ("log days", "rows", "write + compact s", "rows/s"), 2)
    assert int(written[-1][1].replace(",", "")) == 3 * (1440 + 288) * 20 * 2


def test_storage(capsys):
    from orchestrator.bench import storage

    assert storage.main(["--smoke"]) == 0  # its own S3 server, as the suite's
    out = capsys.readouterr().out
    headers = ("operation", "local p50 ms", "local p99 ms", "S3 p50 ms", "S3 p99 ms", "S3 / local")
    rows = assert_table(out, headers, 5)
    assert rows[0][0] == "WAL record (one shard call)"
    assert all(float(r[3]) > 0 for r in rows) and "shard calls a second" in out


# --- in a subprocess: Ray or Serve ------------------------------------------------------------


@pytest.mark.slow
def test_feeds_with_replay(data_args):
    out = run_bench("feeds", *data_args, timeout=180)
    rows = assert_table(out, ("workload", "ours c/s", "pandas c/s", "ratio", "target", "met"), 5)
    replay = rows[-1]
    assert replay[0].startswith("(d) replay via feed actor") and replay[1][0].isdigit(), replay


@pytest.mark.slow
def test_pipeline():
    out = run_bench("pipeline", timeout=240)
    rows = assert_table(
        out,
        ("path", "symbol-candles/s", "batch latency p50 / p99", "20-symbol tick latency p50 / p99"),
        2,
    )
    assert rows[0][0].startswith("Serve pipeline") and rows[0][1][0].isdigit(), rows
    runs = assert_table(
        out,
        (
            "throughput run",
            "Serve pipeline",
            "baseline",
            "ratio",
            "CPU µs / symbol-candle",
            "cores busy",
            "stolen",
        ),
        1,
    )
    assert runs[0][1].replace(",", "") == rows[0][1].replace(",", ""), (runs, rows)
    assert "engine auto" in out  # as configs/production.yaml serves
    assert_table(out, ("stage (throughput run)", "CPU µs per symbol-candle"), 2)


@pytest.mark.slow
def test_pipeline_matrix():
    out = run_bench("pipeline", "--matrix", timeout=300)
    rows = assert_table(
        out,
        (
            "tick kind (timeframes closing)",
            "ticks",
            "Serve: emit -> last prediction p50 / p99 / max",
            "baseline: one process p50 / p99 / max",
        ),
        2,
    )
    kinds = {row[0]: int(row[1]) for row in rows}
    # The live ticks cross the day's close: all six timeframes close at once, and predict.
    assert kinds.get("1m+5m+15m+1h+4h+1d") == 1 and kinds.get("1m", 0) > 0, rows
    assert "model errors: 0" in out
    assert_table(out, ("process kind (end of run)", "count", "PSS sum"), 3)


@pytest.mark.slow
def test_backfill(data_args):
    out = run_bench("backfill", *data_args, timeout=180)
    rows = assert_table(
        out,
        (
            "case",
            "1 process",
            "CPU us",
            "model us",
            "2-core cap",
            "2 processes",
            "Ray Data",
            "Ray steady",
            "naive",
            "best/naive",
        ),
        3,
    )
    features_only = rows[0]
    assert features_only[0] == "features only" and features_only[6][0].isdigit(), features_only


@pytest.mark.slow
def test_http():
    out = run_bench("http", timeout=120)
    rows = assert_table(
        out,
        (
            "server",
            "body",
            "conns",
            "rows/req",
            "req/s",
            "rows/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "baseline req/s",
            "vs baseline",
            "server CPU",
            "client CPU",
        ),
        3,
    )
    baseline = [r for r in rows if r[0].startswith("FastAPI")]
    assert baseline and all(r[8] == "0" for r in baseline), baseline


@pytest.mark.slow
def test_stack():
    out = run_bench("stack", timeout=180)
    rows = assert_table(
        out, ("measure", "configs/local.yaml (smoke: 1 synthetic feed, 1 model)"), 4
    )
    assert rows[0][0] == "serve run -> first prediction", rows


@pytest.mark.slow
def test_dashboard():
    out = run_bench("dashboard", timeout=300)
    rows = assert_table(out, ("what", "dashboard", "baseline", "baseline is"), 5)
    assert rows[0][0] == "first load, bytes" and int(rows[0][1].replace(",", "")) > 100_000, rows


@pytest.mark.slow
def test_soak(tmp_path):
    out = run_bench("soak", "--out", str(tmp_path / "soak"), timeout=300)
    rows = assert_table(
        out, ("process kind", "n", "PSS at settle, MiB", "PSS at end, MiB", "growth %", "CPU %"), 5
    )
    assert any(r[0] == "ray::FeatureShard" for r in rows), rows
    assert_table(out, ("queue", "max", "at end", "only grew in the second half"), 4)
    report = (tmp_path / "soak" / "report.md").read_text()
    assert "| minute | 1m tick p99, ms |" in report
    assert all(
        (tmp_path / "soak" / f"{n}.png").stat().st_size > 1000
        for n in ("memory", "tick_p99", "queues")
    )


@pytest.mark.slow
def test_symbols():
    out = run_bench("symbols", timeout=300)
    headers = ("phase", "ticks", "rows", "p50 ms", "p99 ms", "max ms", "longest tick gap s")
    rows = assert_table(out, (*headers, "missed"), 3)
    assert rows[0][0] == "steady (baseline)" and int(rows[0][1]) > 0, rows
    assert all(r[7] == "0" for r in rows), rows  # the symbols that stay miss no tick
    calls = assert_table(out, ("request", "n", "median s", "max s", "warm-up candles each"), 2)
    assert calls[0][0].startswith("add") and int(calls[0][4]) > 0, calls


def test_kafka():
    out = run_bench("kafka", timeout=300)
    rows = assert_table(out, ("writing events", "events/s", "vs plain loop"), 3)
    assert all(float(r[1].replace(",", "")) > 0 for r in rows)
    headers = ("candles from a topic", "candles", "seconds", "candles/s", "vs plain loop")
    through = assert_table(out, headers, 2)
    assert through[1][1] == through[0][1] == "800"  # 20 symbols x 40 minutes, every one read
