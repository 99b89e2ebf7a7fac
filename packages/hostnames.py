"""Host names as browsers and Deno reach them (UTS #46, then IDNA 2008): the one conversion
for every host name that comes from a person, a manifest or a setting."""

from __future__ import annotations

import idna


class HostnameError(ValueError):
    """A host name that is not one; str() is a sentence for the user."""


def idna_hostname(text: str) -> str:
    """A host name as browsers (the WHATWG URL parser) and Deno reach it: UTS #46 mapping
    (case, full-width forms, the ideographic full stop), then IDNA 2008 (the `idna` package),
    so `faß.de` is `xn--fa-hia.de` and not IDNA 2003's `fass.de`, a final sigma stays a final
    sigma, and joiners outside their context are refused rather than dropped. No trailing dot.
    Plain ASCII names are only lower-cased here; callers check their labels."""
    host = text.strip()
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise HostnameError(f"{host[:100]!r} is not a valid host name: {exc}") from None
    mapped = mapped.rstrip(".")
    if not mapped:
        raise HostnameError("the host name is empty")
    if mapped.isascii() and "xn--" not in mapped:
        return mapped
    try:
        return idna.encode(mapped, uts46=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise HostnameError(
            f"{host[:100]!r} is not a valid international domain name: {exc}"
        ) from None
