"""The address of the client a request came from (the sign-in limits count by it).

Without DASHBOARD_CLIENT_IP_HEADER it is REMOTE_ADDR, the peer gunicorn sees. Behind proxies (an
ingress, a load balancer) that peer is the last proxy, the same for everyone; each proxy appends
the address it saw to X-Forwarded-For, so the client is DASHBOARD_TRUSTED_PROXIES hops from the
right. Whatever stands further left the client sent itself and could be anything.
"""

from __future__ import annotations

from ipaddress import ip_address

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    peer = request.META.get("REMOTE_ADDR", "")
    if not settings.CLIENT_IP_HEADER:
        return canonical_address(peer) or peer
    meta_key = "HTTP_" + settings.CLIENT_IP_HEADER.upper().replace("-", "_")
    # A repeated header reaches Django joined with commas, in the order it was sent.
    hops = [hop.strip() for hop in request.META.get(meta_key, "").split(",") if hop.strip()]
    if len(hops) < settings.TRUSTED_PROXIES:
        # Not through every trusted proxy (a probe inside the cluster, say): only the peer is known.
        return canonical_address(peer) or peer
    return canonical_address(hops[-settings.TRUSTED_PROXIES]) or canonical_address(peer) or peer


def canonical_address(text: str) -> str | None:
    """`text` as one spelling of its IP address (IPv4-mapped IPv6 as IPv4; a port some proxies add,
    `1.2.3.4:5678` or `[2001:db8::1]:443`, dropped), or None if it is not an address."""
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1 : text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.split(":")[0])
    for candidate in candidates:
        try:
            address = ip_address(candidate)
        except ValueError:
            continue
        mapped = getattr(address, "ipv4_mapped", None)
        return str(mapped or address)
    return None
