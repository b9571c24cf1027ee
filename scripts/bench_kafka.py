#!/usr/bin/env python
"""Thin wrapper: `tickcast bench kafka` (orchestrator/bench/kafka.py)."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "kafka", *sys.argv[1:]]))
