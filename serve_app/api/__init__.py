"""The public HTTP and WebSocket API (FastAPI, no Ray): ``create_api`` builds it around any
``Backend``; the Serve ingress mounts it with Ray handles behind it."""
