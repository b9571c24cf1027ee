#!/usr/bin/env python
"""Thin wrapper: `tickcast bench soak` (orchestrator/bench/soak.py)."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "soak", *sys.argv[1:]]))
