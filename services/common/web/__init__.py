"""What the HTTP APIs share: the Flask app, tokens and roles, validators, /metrics."""
