"""App packages, with no database: the ground floor of Dropserver.

Everything about an app package that is decided from its bytes alone lives here: the one
rule for a path inside a package (paths), unpacking untrusted archives (extraction), the
manifest (manifest), routes and the route matcher (routes), icons (icons), building a
package from a folder (build), fetching one from a URL (fetch) and the network allowlist
syntax (allowlist).

No models, no ORM, no Django settings read at import: `appspaces`, `backups` and the
sandbox build on this layer; it builds on nothing of theirs (enforced by import-linter).
"""
