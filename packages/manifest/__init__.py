"""`dropapp.json`: model.py (its types and limits), reading.py (load and parse), fields.py
(the rules of each field)."""

from packages.manifest.model import Manifest, ManifestResult
from packages.manifest.reading import load_manifest, parse_manifest

__all__ = ["Manifest", "ManifestResult", "load_manifest", "parse_manifest"]
