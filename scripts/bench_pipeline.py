#!/usr/bin/env python
"""Thin wrapper: `tickcast bench pipeline` (orchestrator/bench/pipeline.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline", *sys.argv[1:]]))
