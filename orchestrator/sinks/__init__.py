"""Where predictions go: the latest store and the Parquet prediction log."""
