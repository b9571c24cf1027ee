"""Ray actors: thin shells that run the pure pipeline logic and pass data between stages."""
