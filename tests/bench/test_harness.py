"""The benchmarks' shared harness: tables, timing, the smoke flag (no Ray, milliseconds)."""

from __future__ import annotations

import argparse
import math
import socket

import numpy as np
import pytest

from orchestrator.bench import harness


def test_markdown_table_pads_aligns_and_formats():
    text = harness.markdown_table(
        ("case", "rate /s", "us each", "ratio"),
        [("one", 1234567.8, 0.5, "3.4x"), ("two | three", None, float("nan"), "12x")],
        formats=(None, None, ".2f", None),
    )
    lines = text.splitlines()
    assert lines[0] == "| case         |   rate /s | us each | ratio |"
    assert lines[1] == "| ------------ | --------: | ------: | ----: |"
    assert lines[2] == "| one          | 1,234,568 |    0.50 |  3.4x |"
    assert lines[3] == "| two \\| three |         - |       - |   12x |"
    assert {len(line) for line in lines} == {len(lines[0])}


def test_markdown_table_cells():
    assert harness.format_cell(1234) == "1,234"
    assert harness.format_cell(np.int64(1234)) == "1,234"
    assert harness.format_cell(np.float32("nan")) == "-"
    assert harness.format_cell(2.0 / 3, ".3f") == "0.667"
    # short rows are padded; a column of words stays left-aligned
    text = harness.markdown_table(("server", "body", "req/s"), [("a", "json", 5), ("b", "no")])
    assert text.splitlines()[1] == "| ------ | ---- | ----: |"
    assert text.splitlines()[3] == "| b      | no   |       |"
    with pytest.raises(ValueError):
        harness.markdown_table(("one",), [(1, 2)])


def test_header_names_the_machine():
    line = harness.header("feeds", "200 symbols", smoke=True)
    assert line.startswith("tickcast feeds benchmark: ")
    assert "cores (load average " in line and line.endswith(harness.SMOKE_NOTE)


def test_timing_helpers():
    calls = []
    assert harness.best_rate(lambda: calls.append(1) or 1000, repeats=3) > 0
    assert len(calls) == 3
    seconds = harness.best_seconds(calls.append, 2, repeats=2, loops=5)
    assert 0 < seconds < 1 and calls.count(2) == 10
    wall, cpu = harness.best_times(lambda: sum(range(1000)), repeats=2)
    assert 0 < wall < 1 and 0 <= cpu < 1
    assert harness.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert math.isnan(harness.percentile([], 50))


def test_free_port_is_free():
    port = harness.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_process_helpers_read_this_process():
    import os

    assert os.getpid() in harness.session_pids(os.getsid(0))
    assert harness.cpu_seconds(os.getpid()) > 0
    assert harness.cpu_seconds(2**22 + 1) == 0.0  # no such process


def test_apply_smoke_keeps_explicit_values():
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=2000)
    harness.add_smoke_flag(parser)
    args = parser.parse_args(["--smoke", "--minutes", "7"])
    harness.apply_smoke(parser, args, symbols=20, minutes=30)
    assert (args.symbols, args.minutes) == (20, 7)
    args = parser.parse_args([])
    harness.apply_smoke(parser, args, symbols=20, minutes=30)
    assert (args.symbols, args.minutes) == (1000, 2000)
