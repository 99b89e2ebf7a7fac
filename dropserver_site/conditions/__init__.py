"""Conditions of the instance that the admins' notices report (notices/): registered when the
site app is ready (DropserverSiteConfig.ready).

instance  free disk under DS_DATA_DIR, and the panel certificate's renewal (edge/certs.py)
"""
