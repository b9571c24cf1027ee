#!/usr/bin/env python
"""Thin wrapper: `tickcast bench history` (orchestrator/bench/history.py)."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "history", *sys.argv[1:]]))
