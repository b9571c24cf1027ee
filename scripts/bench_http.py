#!/usr/bin/env python
"""Thin wrapper: `tickcast bench http` (orchestrator/bench/http.py) under its old path."""

import sys

from orchestrator.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "http", *sys.argv[1:]]))
