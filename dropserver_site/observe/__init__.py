"""Watching the instance from outside: `/healthz` and `/readyz` (`health`), the Prometheus
exposition at `/metrics` (`metrics`), and the log format, text or JSON (`logs`)."""
