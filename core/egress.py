"""Which addresses abacus may open connections to on behalf of a user (webhooks).

A project admin chooses the webhook URL, and the worker that POSTs to it sits inside the
network: without a rule it would reach loopback services, the private network and the cloud
metadata endpoint (SSRF). The rule: only globally routable unicast addresses, unless an address
or host name is in ``ABACUS_WEBHOOK_ALLOWED_HOSTS`` (comma-separated host names, addresses or
CIDRs, for deliberate internal receivers).

It is applied twice:

- when the URL is saved (``url_refusal``: a 400 naming ``webhook_url``), to say so early;
- when a message is sent, after DNS resolution, by the connection itself
  (``guarded_session``): the host is resolved **once**, every address it resolves to is
  checked, and the socket connects to the checked address, so a DNS answer that changes
  between the check and the connection (DNS rebinding) cannot swap it. TLS still verifies the
  certificate for the host name (SNI and hostname checks use the URL's host, not the address).

Proxies from the environment are ignored (a proxy would resolve the name itself). The address
classification is the standard library's ``ipaddress`` (``is_global`` and friends), with the
IPv4 address embedded in IPv4-mapped, 6to4, Teredo and NAT64 IPv6 addresses checked too.
"""

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Host names that are internal whatever they resolve to on the machine that checks them.
INTERNAL_NAMES = ("localhost", "metadata.google.internal", "metadata")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedDestination(Exception):
    """The destination is not allowed; the message says which address and why."""


def address_refusal(ip: Address) -> str | None:
    """Why connecting to this address is refused, or None when it is a public unicast one."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        inner = address_refusal(embedded)
        if inner:
            return f"{inner} (embedded in {ip})"
    for test, what in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local (cloud metadata lives here)"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(ip, test):
            return what
    if not ip.is_global:
        return "non-public (shared, documentation or special-purpose range)"
    return None


def _embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _allowed() -> tuple[set[str], list[Network]]:
    names: set[str] = set()
    networks: list[Network] = []
    for entry in getattr(settings, "ABACUS_WEBHOOK_ALLOWED_HOSTS", []):
        entry = entry.strip().lower().strip("[]")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return names, networks


def resolve(host: str, port: int) -> list[Address]:
    """Every address the host resolves to (one DNS lookup); raises socket.gaierror."""
    infos = socket.getaddrinfo(
        host, port, family=urllib3_connection.allowed_gai_family(), type=socket.SOCK_STREAM
    )
    seen: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def checked_addresses(host: str, port: int) -> list[Address]:
    """Resolve once and check every address; raises BlockedDestination or socket.gaierror."""
    names, networks = _allowed()
    name = host.strip("[]").rstrip(".").lower()
    addresses = resolve(name, port)
    if name in names:
        return addresses  # an allow-listed receiver, whatever it resolves to
    for ip in addresses:
        if any(ip.version == net.version and ip in net for net in networks):
            continue
        reason = address_refusal(ip)
        if reason:
            shown = name if name == str(ip) else f"{name} resolves to {ip}"
            raise BlockedDestination(
                f"{shown}, a {reason} address: abacus does not send webhooks inside its own "
                "network unless ABACUS_WEBHOOK_ALLOWED_HOSTS lists it."
            )
    return addresses


def url_refusal(url: str) -> str | None:
    """Why a webhook URL is refused when saved, or None. A name that does not resolve now is
    accepted (the check at send time still applies)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "Use an http:// or https:// URL."
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "The URL has no host."
    if parts.username or parts.password:
        return "Put no user name or password in the URL; receivers verify the signature instead."
    names, _ = _allowed()
    if host not in names and any(host == n or host.endswith("." + n) for n in INTERNAL_NAMES):
        return (
            f"{host} is an internal name: abacus does not send webhooks inside its own network "
            "unless ABACUS_WEBHOOK_ALLOWED_HOSTS lists it."
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        checked_addresses(host, port)
    except BlockedDestination as exc:
        return str(exc)
    except (OSError, ValueError, UnicodeError):
        return None
    return None


# --- the guarded transport -------------------------------------------------------------------


class _GuardedConnectionMixin:
    """Connects to an address checked in the same step as its (single) DNS lookup."""

    def _new_conn(self) -> socket.socket:
        host, port = self._dns_host, self.port
        try:
            addresses = checked_addresses(host, port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        return self._connect_any(addresses, port)

    def _connect_any(self, addresses: Iterable[Address], port: int) -> socket.socket:
        error: OSError | None = None
        for ip in addresses:
            try:
                return urllib3_connection.create_connection(
                    (str(ip), port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from exc
            except OSError as exc:
                error = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A requests transport adapter whose connections go only where ``checked_addresses``
    allows."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPConnectionPool,
            "https": GuardedHTTPSConnectionPool,
        }

    def proxy_manager_for(self, proxy: str, **kwargs):  # noqa: ANN003, ANN201
        raise BlockedDestination("Webhooks are not sent through proxies.")


def guarded_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies (they resolve names themselves), no .netrc
    adapter = GuardedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
