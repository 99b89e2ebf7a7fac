"""Network allowlist entries: parsing, the address policy, and their Deno / CSP spellings.

One set of rules for every place an entry comes from: a manifest's suggested `network`, what
an owner types when creating an appspace, and what the sandbox (`--allow-net`) and the gateway
(CSP sources) are handed. Entries are parsed into canonical values; anything ambiguous is
refused with a sentence saying why, rather than guessed at.

Server entries (what the app's server code may connect to):
    api.example.com    *.example.org    api.example.com:8443    203.0.113.7:443    [2606:4700::1]
A `*.` wildcard means "any subdomain" (not the name itself, as in CSP); no scheme, no path,
and no IP literal that is not a public address. Given this instance's hosts (`InstanceHosts`),
an appspace host of this instance (`<name>.<domain>`, exactly one label under the domain) is
accepted even when the domain is a local name, marked `instance` (the sandbox reaches it
through the platform's gateway, never directly), and the panel's host is refused.

Browser origins (what the app's pages may load from or connect to, via CSP):
    https://tiles.example.com    https://*.example.com    https://cdn.example.com:8443
`http:` only for localhost-style hosts; no paths; never `*` alone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from packages.hostnames import HostnameError, idna_hostname

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Names that only ever mean "this machine" or "this local network".
_LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "lan", "localdomain")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class AllowlistError(ValueError):
    """An entry that cannot be allowed; str() is the reason, for a human."""


# --- The address policy ---------------------------------------------------------------------


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, where a translator would route it there."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses.

    Refuses loopback, private (RFC 1918, ULA — so also fd00:ec2::254), link-local (so the
    169.254.169.254 metadata service), CGNAT, multicast, reserved, unspecified, documentation
    ranges, and IPv6 forms that embed one of those (IPv4-mapped, 6to4, NAT64).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.is_site_local:
            return False
    return bool(
        ip.is_global
        and not ip.is_private
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_unspecified
    )


def is_loopback_address(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# --- Host names -----------------------------------------------------------------------------


def normalize_hostname(host: str) -> str:
    """Lower-case ASCII (punycode) as browsers and Deno reach it (UTS #46 / IDNA 2008, see
    `packages.hostnames.idna_hostname`), no trailing dot; AllowlistError if not a DNS name."""
    try:
        host = idna_hostname(host)
    except HostnameError as exc:
        raise AllowlistError(str(exc)) from None
    if len(host) > 253:
        raise AllowlistError("the host name is longer than 253 characters")
    labels = host.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise AllowlistError(
                f"{host!r} is not a valid host name (letters, digits and hyphens between dots)"
            )
    if labels[-1].isdigit():
        raise AllowlistError(f"{host!r} looks like an incomplete IP address")
    return host


def _is_local_name(host: str) -> bool:
    return any(host == s or host.endswith("." + s) for s in _LOCAL_SUFFIXES)


def _parse_port(text: str, entry: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise AllowlistError(f"{entry!r}: the port must be a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise AllowlistError(f"{entry!r}: the port must be a number from 1 to 65535")
    return port


def _split_host_port(text: str, entry: str) -> tuple[str, int | None, bool]:
    """-> (host, port, is_bracketed_ipv6)."""
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise AllowlistError(f"{entry!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest == "":
            return host, None, True
        if not rest.startswith(":"):
            raise AllowlistError(f"{entry!r}: unexpected text after the IPv6 address")
        return host, _parse_port(rest[1:], entry), True
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, _parse_port(port, entry), False
    return text, None, False


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# --- Server entries -------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceHosts:
    """This instance's names, for telling an appspace host apart from the rest of the world.

    `domain`: DS_DOMAIN; `panel`: the panel's host (never reachable from apps); `port`: the
    public port, the only one an appspace host may be allowlisted with besides none."""

    domain: str
    panel: str
    port: int

    def is_appspace_host(self, host: str) -> bool:
        label, dot, rest = host.partition(".")
        return bool(dot) and rest == self.domain and host != self.panel and "." not in label


@dataclass(frozen=True, order=True)
class ServerEntry:
    """A host the app's server code may connect to. `host` is canonical (punycode, or the
    compressed IP); `port` None means any port. `wildcard` (`*.host`) means `host` and any
    subdomain of it: that is what Deno's --allow-net grants, and Deno is what enforces it."""

    host: str
    port: int | None = None
    wildcard: bool = False
    is_ip: bool = False
    # An appspace host of this instance: reached through the platform's gateway (the relay).
    instance: bool = False

    def _host_text(self) -> str:
        if self.is_ip and ":" in self.host:
            return f"[{self.host}]"
        return f"*.{self.host}" if self.wildcard else self.host

    def __str__(self) -> str:
        return self._host_text() + (f":{self.port}" if self.port else "")

    def deno_net_value(self) -> str:
        """The spelling for Deno's `--allow-net=` list (`*.` is Deno's subdomain wildcard)."""
        return str(self)

    def matches(self, host: str, port: int) -> bool:
        """Whether a connection to host:port (host already canonical) is covered."""
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host == self.host or host.endswith("." + self.host)
        return host == self.host


def parse_server_entry(text: str, *, instance: InstanceHosts | None = None) -> ServerEntry:
    """Parse `host`, `*.host`, `host:port`, `IP`, `[IPv6]:port` into a ServerEntry.

    With `instance`, this instance's appspace hosts are accepted (`instance=True`) and its
    panel host refused; without it, they are judged as any other name."""
    if not isinstance(text, str):
        raise AllowlistError("an entry must be a string")
    entry = text.strip()
    if not entry:
        raise AllowlistError("the entry is empty")
    looks_like_scheme = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(?!\d)", entry)
    if "://" in entry or (looks_like_scheme and _parse_ip(entry) is None):
        raise AllowlistError(
            f"{entry!r}: write the host name only, without a scheme such as https://"
        )
    if "/" in entry or "?" in entry or "#" in entry:
        raise AllowlistError(f"{entry!r}: a server entry is a host name, without a path")
    if "@" in entry:
        raise AllowlistError(f"{entry!r}: a server entry cannot contain '@'")
    if any(c.isspace() for c in entry):
        raise AllowlistError(f"{entry!r}: a server entry cannot contain spaces")
    host, port, bracketed = _split_host_port(entry, entry)
    ip = _parse_ip(host)
    if bracketed and not isinstance(ip, ipaddress.IPv6Address):
        raise AllowlistError(f"{entry!r}: only IPv6 addresses go in brackets")
    if ip is None and host.count(":") > 1:
        raise AllowlistError(f"{entry!r}: not a valid IPv6 address")
    if ip is not None:
        if not is_public_address(ip):
            raise AllowlistError(
                f"{entry!r}: {ip} is a loopback, private, link-local or reserved address; "
                "apps may only reach public addresses"
            )
        return ServerEntry(host=ip.compressed, port=port, is_ip=True)
    wildcard = False
    if host == "*":
        raise AllowlistError(f"{entry!r}: '*' alone would allow every host")
    if host.startswith("*."):
        wildcard, host = True, host[2:]
    if "*" in host:
        raise AllowlistError(f"{entry!r}: a wildcard is only allowed as a leading '*.'")
    host = normalize_hostname(host)
    if instance is not None and not wildcard:
        if host == instance.panel:
            raise AllowlistError(f"{entry!r}: this server's panel is never reachable from apps")
        if instance.is_appspace_host(host):
            if port is not None and port != instance.port:
                raise AllowlistError(
                    f"{entry!r}: appspaces of this server are reached on port {instance.port}"
                    " only (or leave the port out)"
                )
            return ServerEntry(host=host, port=port, instance=True)
    if "." not in host:
        raise AllowlistError(f"{entry!r}: use a fully qualified name such as api.example.com")
    if _is_local_name(host):
        raise AllowlistError(f"{entry!r}: names of this machine or the local network are refused")
    return ServerEntry(host=host, port=port, wildcard=wildcard)


# --- Browser origins ------------------------------------------------------------------------


def _is_localhost_style(host: str, ip: IPAddress | None) -> bool:
    if ip is not None:
        return is_loopback_address(ip)
    return host == "localhost" or host.endswith(".localhost")


@dataclass(frozen=True, order=True)
class BrowserOrigin:
    """An origin the app's pages may use, as a CSP source. `port` None means the default."""

    scheme: str
    host: str
    port: int | None = None
    wildcard: bool = False

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port else "")

    def csp_source(self) -> str:
        """The CSP host-source, e.g. `https://*.example.com` (which, as in CSP, does not
        cover example.com itself)."""
        return str(self)


def parse_browser_origin(text: str) -> BrowserOrigin:
    """Parse `https://host[:port]` or `https://*.host` into a BrowserOrigin."""
    if not isinstance(text, str):
        raise AllowlistError("an origin must be a string")
    entry = text.strip()
    if not entry:
        raise AllowlistError("the origin is empty")
    if any(c.isspace() for c in entry) or "\\" in entry:
        raise AllowlistError(f"{entry!r}: an origin cannot contain spaces or backslashes")
    if "://" not in entry:
        raise AllowlistError(f"{entry!r}: write a full origin such as https://{entry}")
    scheme, _, rest = entry.partition("://")
    scheme = scheme.lower()
    if scheme not in ("https", "http"):
        raise AllowlistError(f"{entry!r}: only https:// origins are allowed")
    authority, _, path = rest.partition("/")
    if path or "?" in authority or "#" in authority:
        raise AllowlistError(f"{entry!r}: an origin has no path, query or fragment")
    if "@" in authority:
        raise AllowlistError(f"{entry!r}: an origin cannot contain a user name")
    host, port, bracketed = _split_host_port(authority, entry)
    if host == "*" or host == "":
        raise AllowlistError(f"{entry!r}: '*' alone would allow every site")
    ip = _parse_ip(host)
    if bracketed or isinstance(ip, ipaddress.IPv6Address):
        raise AllowlistError(f"{entry!r}: CSP cannot express IPv6 addresses; use a host name")
    wildcard = False
    if ip is None:
        if host.startswith("*."):
            wildcard, host = True, host[2:]
        if "*" in host:
            raise AllowlistError(f"{entry!r}: a wildcard is only allowed as a leading '*.'")
        host = normalize_hostname(host)
    else:
        host = ip.compressed
    local = _is_localhost_style(host, ip)
    if scheme == "http" and not local:
        raise AllowlistError(
            f"{entry!r}: only https:// origins are allowed (http:// only for localhost)"
        )
    if ip is not None and not local and not is_public_address(ip):
        raise AllowlistError(f"{entry!r}: {ip} is a private or reserved address")
    if ip is None and not local:
        if "." not in host:
            raise AllowlistError(f"{entry!r}: use a fully qualified name such as cdn.example.com")
        if _is_local_name(host):
            raise AllowlistError(f"{entry!r}: names of the local network are refused")
    if port == (443 if scheme == "https" else 80):
        port = None
    return BrowserOrigin(scheme=scheme, host=host, port=port, wildcard=wildcard)
