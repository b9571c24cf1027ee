"""tickcast's Ray Serve deployments (thin shells): model servers, the HTTP ingress, and the
pipeline supervisor deployment that starts the feed and feature actors."""
