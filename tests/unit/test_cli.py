"""The tickcast command: the installed entry point lists every subcommand, and each one,
benchmarks included, answers --help with its own usage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli.main import BENCHMARKS, COMMANDS, main


def test_the_installed_command_lists_every_subcommand():
    tickcast = Path(sys.executable).with_name("tickcast")
    result = subprocess.run([str(tickcast), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout


@pytest.mark.parametrize(
    "argv",
    [[name, "--help"] for name in COMMANDS if name != "bench"]
    + [["bench", name, "--help"] for name in BENCHMARKS],
)
def test_each_subcommand_has_its_own_help(argv, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tickcast"])
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    assert f"usage: tickcast {' '.join(argv[:-1])}" in capsys.readouterr().out


def test_bench_without_a_name_lists_the_benchmarks(capsys):
    assert main(["bench"]) == 2
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in BENCHMARKS)


def test_an_unknown_command_is_refused_by_name(capsys):
    assert main(["bakfill"]) == 2
    assert "unknown command 'bakfill'" in capsys.readouterr().err
