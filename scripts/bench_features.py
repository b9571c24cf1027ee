#!/usr/bin/env python
"""Thin wrapper: `tickcast bench features` (orchestrator/bench/features.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "features", *sys.argv[1:]]))
