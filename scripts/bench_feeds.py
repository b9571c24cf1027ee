#!/usr/bin/env python
"""Thin wrapper: `tickcast bench feeds` (orchestrator/bench/feeds.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "feeds", *sys.argv[1:]]))
