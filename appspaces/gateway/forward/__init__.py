"""Reaching the app: a request or WebSocket handed to the sandbox over its unix socket
(`proxy`, `upstream`, `websocket`), static routes served from the version's files without
waking it (`static`), and what ASGI cannot say done through Daphne (`server_hooks`)."""
