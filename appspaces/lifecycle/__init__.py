"""An appspace's life, from its creation to its deletion.

creation        the appspace row and the Job that makes its data dir and first run
control         status, pause/resume/restart, limits, delete, log tail
version_change  moving an appspace to another installed version of its app
subdomains      which names an owner may choose for `<name>.<DS_DOMAIN>`
quarantine      names freed by a deleted appspace, kept from other owners for a while
sweep           creations and version changes whose worker died; the trash emptied
"""
