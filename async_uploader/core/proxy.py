"""Which proxy a request goes through, decided from an environment mapping: pure, no I/O.

The rules are botocore's (``botocore.utils.get_environ_proxies``, which uses the standard library's
``urllib.request.getproxies`` and ``proxy_bypass``):

* ``HTTPS_PROXY`` for ``https://`` URLs and ``HTTP_PROXY`` for ``http://`` URLs, either spelled in lower or upper
  case, the lower-case one winning when both are set (even set empty); an HTTPS URL never falls back to
  ``HTTP_PROXY``. With ``REQUEST_METHOD`` set (a CGI script) upper-case ``HTTP_PROXY`` is ignored.
* a proxy URL without a scheme is ``http://``; ``user:password@`` in it becomes a ``Proxy-Authorization: Basic``
  header (percent-escapes decoded) and is never shown: ``redact`` replaces the password with ``***``.
* ``NO_PROXY`` (or ``no_proxy``) is a comma-separated list: ``*`` bypasses every host; an entry matches the host
  itself or any subdomain of it (a leading dot is ignored: ``.amazonaws.com`` and ``amazonaws.com`` both match
  ``storage-omics.us-east-1.amazonaws.com``); ``host:port`` matches only that port. As requests does (and
  botocore does not), an IP address or CIDR block (``10.0.0.0/8``) matches IP-address hosts in it.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["Proxy", "bypasses", "proxy_for", "redact"]


@dataclass(frozen=True)
class Proxy:
    """A proxy to send through: its URL without credentials, and the headers that authenticate to it."""

    url: str
    """The proxy URL with no user or password (what is connected to)."""
    shown: str
    """The proxy URL as it may be printed: the password replaced with ``***``."""
    authorization: str | None = None
    """The Proxy-Authorization header value, when the URL carried a user and password."""

    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}

    def __repr__(self) -> str:
        return f"Proxy({self.shown!r})"

    __str__ = __repr__


def _lookup(environ: Mapping[str, str], name: str) -> str | None:
    """``name`` in lower case when it is set at all (set empty, it unsets the upper-case one), else upper case.

    Under CGI (``REQUEST_METHOD`` set) the upper-case ``HTTP_PROXY`` may come from a request header: ignored.
    """
    lower = name.lower()
    if lower in environ:
        return environ[lower].strip() or None
    if lower == "http_proxy" and "REQUEST_METHOD" in environ:
        return None
    return environ.get(name.upper(), "").strip() or None


def _fix_scheme(url: str) -> str:
    if url.startswith(("http:", "https:")):
        return url
    if url.startswith("//"):
        return "http:" + url
    return "http://" + url


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (the user name is kept: it names the account)."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username
    shown = f"{user}:***@{host}" if user else f"***@{host}"
    return urlunsplit((parts.scheme, shown, parts.path, parts.query, parts.fragment))


def _parse(raw: str) -> Proxy:
    url = _fix_scheme(raw)
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, "", ""))
    authorization = None
    if parts.username and parts.password:
        pair = f"{unquote(parts.username)}:{unquote(parts.password)}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(url=bare, shown=redact(url), authorization=authorization)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _entry_matches(entry: str, host: str, netloc: str) -> bool:
    address = _ip(host)
    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
        return address is not None and address in network
    entry_ip = _ip(entry)
    if entry_ip is not None and address is not None:
        return entry_ip == address
    name = entry.lstrip(".")
    if not name:
        return False
    if name in (host, netloc):
        return True
    suffix = "." + name
    return host.endswith(suffix) or netloc.endswith(suffix)


def bypasses(url: str, no_proxy: str | None) -> bool:
    """True when ``no_proxy`` (a NO_PROXY value) says ``url`` goes direct."""
    if not no_proxy:
        return False
    if no_proxy.strip() == "*":
        return True
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    entries = (item.strip().lower() for item in no_proxy.split(","))
    return any(_entry_matches(entry, host, netloc) for entry in entries if entry)


def proxy_for(url: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy ``url`` goes through under ``environ`` (os.environ's shape), or None for a direct connection."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return None
    raw = _lookup(environ, f"{scheme}_proxy")
    if raw is None or bypasses(url, _lookup(environ, "no_proxy")):
        return None
    return _parse(raw)
