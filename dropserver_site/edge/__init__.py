"""The TLS edge: Caddy in front of Daphne when DS_TLS is on (docs/operations.md, "TLS").

Modules:
- caddy: Caddy's JSON config from the settings, its files under DS_DATA_DIR/tls/, the command
  line and environment `serve` starts it with, and the export of the internal CA's root.
- ask: which host names may get a certificate (the on-demand "ask"), and the loopback-only
  ASGI endpoint Caddy asks it through.
- certs: the state of the panel host's certificate, for /readyz.
- checks: the TLS settings in `manage.py check --deploy`.
"""
