#!/usr/bin/env python
"""Thin wrapper: `tickcast bench models` (orchestrator/bench/models.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "models", *sys.argv[1:]]))
