#!/usr/bin/env python
"""Thin wrapper: `tickcast bench symbols` (orchestrator/bench/symbols.py)."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "symbols", *sys.argv[1:]]))
