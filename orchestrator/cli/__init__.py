"""The ``tickcast`` command: one subcommand per batch job and tool (``tickcast --help``)."""
