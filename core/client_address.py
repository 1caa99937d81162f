"""Who the client is: its address, behind as many trusted proxies as ABACUS_PROXY_COUNT says.

The login throttle (django-axes) and the browser endpoint's per-address rate limit count by it.
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest

# An IPv6 client usually holds a whole /64 (one subnet per home or phone), so limits that
# counted single IPv6 addresses could be dodged by changing the last 64 bits.
IPV6_PREFIX = 64


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the address ABACUS_PROXY_COUNT proxies reported in X-Forwarded-For.

    Each proxy appends the address it received the request from, so the client is the entry
    that many places from the right; anything further left was sent by the client itself.
    """
    count = settings.ABACUS_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if count > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR", "")


def client_network(request: HttpRequest) -> str:
    """The client's address as rate limits count it: an IPv4 address, or an IPv6 address's
    /64 network; an address that does not parse is counted as the text it is."""
    address = client_ip(request)
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:100]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX}", strict=False))
    return str(parsed)
