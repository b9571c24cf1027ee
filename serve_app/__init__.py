"""tickcast's Ray Serve application: model deployments, the HTTP ingress, and the
pipeline supervisor deployment that starts the feed and feature actors."""
