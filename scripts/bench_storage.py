#!/usr/bin/env python
"""Thin wrapper: `tickcast bench storage` (orchestrator/bench/storage.py)."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "storage", *sys.argv[1:]]))
