"""The health of what tickcast depends on, pure (no I/O): ``Outage`` turns failures of an
external dependency (Redis, an exchange) into one line when it goes down, one when it is
back, a backoff and a status field. Feeds and sinks both use it."""
