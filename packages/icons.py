"""App icons: the one check that an icon file is small, square and inert (no SVG scripts)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MAX_ICON_BYTES = 50 * 1024
MAX_ICON_SIDE = 2048
_RASTER_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class Icon:
    path: str
    media_type: str
    width: int
    height: int


def check_icon(path: Path, rel: str) -> Icon:
    """The icon at `path` (package-relative `rel`), or ValueError saying what is wrong."""
    size = path.stat().st_size
    if size > MAX_ICON_BYTES:
        raise ValueError(f"the file is {size // 1024} KB; icons must be at most 50 KB")
    suffix = path.suffix.lower()
    if suffix == ".svg":
        width, height = _svg_size(path.read_bytes())
        return Icon(path=rel, media_type="image/svg+xml", width=width, height=height)
    expected = _RASTER_FORMATS.get(suffix)
    if expected is None:
        raise ValueError("must be a .png, .jpg, .webp or .svg file")
    try:
        with Image.open(path, formats=[expected]) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            too_big = max(width, height) > MAX_ICON_SIDE
            if not too_big:
                image.verify()
    except Exception:  # Pillow raises many types for files that are not what they claim
        raise ValueError(f"the file is not a valid {expected} image") from None
    if too_big:
        raise ValueError(f"is {width}×{height} pixels; at most {MAX_ICON_SIDE} per side")
    if width != height:
        raise ValueError(f"must be square; it is {width}×{height} pixels")
    if width < 16:
        raise ValueError(f"is {width}×{height} pixels; at least 16 per side")
    return Icon(path=rel, media_type=_MEDIA_TYPES[expected], width=width, height=height)


_SVG_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px)?\s*$")
_SVG_FORBIDDEN_TAGS = {
    "script", "foreignobject", "iframe", "embed", "object", "handler", "listener",
}  # fmt: skip


def _svg_size(data: bytes) -> tuple[int, int]:
    """The size of a square, inert SVG; ValueError for scripts, external references or a
    shape that is not square. The panel shows icons in <img>, but an SVG opened on its own
    runs its scripts in the panel's origin, so anything active is refused outright."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the SVG file is not UTF-8") from None
    lowered = text.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise ValueError("SVG icons must not contain a DOCTYPE or entities")
    try:
        root = ET.fromstring(text)  # no DTD or entity reaches the parser
    except ET.ParseError:
        raise ValueError("the SVG file is not well-formed XML") from None
    if _local(root.tag) != "svg":
        raise ValueError("the SVG file does not start with an <svg> element")
    for element in root.iter():
        tag = _local(element.tag).lower()
        if tag in _SVG_FORBIDDEN_TAGS:
            raise ValueError(f"SVG icons must not contain <{_local(element.tag)}>")
        if tag == "style" and _active_css(element.text or ""):
            raise ValueError("SVG icons must not load anything from outside the file")
        for name, value in element.attrib.items():
            attr = _local(name).lower()
            squashed = re.sub(r"[\s\x00-\x1f]+", "", value).lower()
            if attr.startswith("on"):
                raise ValueError(f"SVG icons must not have event handlers ({_local(name)})")
            if attr == "href" and not value.strip().startswith("#"):
                raise ValueError("SVG icons must not refer to anything outside the file")
            if "javascript:" in squashed or _active_css(value):
                raise ValueError("SVG icons must not contain scripts or external references")
    return _svg_square(root)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _active_css(css: str) -> bool:
    squashed = re.sub(r"\s+", "", css).lower()
    if "@import" in squashed or "expression(" in squashed:
        return True
    return any(not rest.lstrip("'\"").startswith("#") for rest in squashed.split("url(")[1:])


def _svg_square(root: ET.Element) -> tuple[int, int]:
    view_box = root.get("viewBox")
    if view_box is not None:
        numbers = re.split(r"[\s,]+", view_box.strip())
        try:
            _, _, width, height = (float(n) for n in numbers)
        except ValueError:
            raise ValueError(f"the SVG viewBox {view_box[:40]!r} is not four numbers") from None
    else:
        sizes = [_SVG_NUMBER.match(root.get(attr) or "") for attr in ("width", "height")]
        if not all(sizes):
            raise ValueError("the SVG needs a viewBox, or width and height in pixels")
        width, height = (float(m.group(1)) for m in sizes if m)
    if width <= 0 or height <= 0:
        raise ValueError("the SVG has an empty size")
    if abs(width - height) > 1e-6 * max(width, height):
        raise ValueError(f"must be square; the SVG is {width:g}×{height:g}")
    return round(width), round(height)
