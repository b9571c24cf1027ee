#!/usr/bin/env python
"""Thin wrapper: `tickcast bench dashboard` (orchestrator/bench/dashboard.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "dashboard", *sys.argv[1:]]))
