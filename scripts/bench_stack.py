#!/usr/bin/env python
"""Thin wrapper: `tickcast bench stack` (orchestrator/bench/stack.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "stack", *sys.argv[1:]]))
