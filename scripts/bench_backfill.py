#!/usr/bin/env python
"""Thin wrapper: `tickcast bench backfill` (orchestrator/bench/backfill.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "backfill", *sys.argv[1:]]))
