"""Outbound HTTP to an address a client chose (webhooks), without server-side request forgery.

The URL's host is resolved once; every address it resolves to must be public (not loopback,
link-local — the cloud metadata service at 169.254.169.254 among them —, private, shared,
multicast, reserved or unspecified; an IPv4 address written as a decimal number, in octal or hex,
or mapped into IPv6 is judged as the IPv4 address it is), unless the operator allows its network.
The request then connects to that checked address itself (the Host header and TLS name stay the
host's), so a DNS answer that changes between the check and the connection cannot redirect it; a
redirect is never followed. Plain Python + urllib3, no Django: the caller passes the allowed networks.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundRefused(ValueError):
    """A target the platform will not send to, and why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked address the request connects to


def networks(values: Iterable[str]) -> list[Network]:
    """The operator's allowed networks from CIDR strings; ValueError naming a malformed one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network (CIDR, e.g. 10.0.0.0/8)") from None
    return out


def address_problem(address: str, allowed: Iterable[Network] = ()) -> str | None:
    """Why ``address`` may not be sent to, or None."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.sixtofour):
        ip = ip.ipv4_mapped or ip.sixtofour
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    for name, internal in (("loopback", ip.is_loopback), ("link-local (cloud metadata lives there)", ip.is_link_local),
                           ("multicast", ip.is_multicast), ("unspecified", ip.is_unspecified),
                           ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if internal:
            return f"{ip} is a {name} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def target_of(url: str, *, allowed: Iterable[Network] = ()) -> Target:
    """Resolve ``url``'s host and check every address it gives; OutboundRefused naming the
    problem, OSError when the name does not resolve."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused("the url must be http(s)://host/...")
    if parts.username or parts.password:
        raise OutboundRefused("the url must not carry credentials")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = list(allowed)
    infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        problem = address_problem(address, allowed)
        if problem:
            raise OutboundRefused(f"{parts.hostname} resolves to {address}: {problem}; the platform does not "
                                  "send to internal addresses (an operator may allow a network: "
                                  "WEBHOOK_ALLOWED_NETWORKS)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def post_pinned(url: str, *, body: bytes, headers: Mapping[str, str], timeout: float,
                allowed: Iterable[Network] = ()) -> int:
    """POST ``body`` to ``url`` on the address checked by :func:`target_of`, following no
    redirect; returns the status code. OutboundRefused for a refused target; urllib3's errors
    (or OSError) when it cannot be reached."""
    import urllib3

    target = target_of(url, allowed=allowed)
    default_port = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host  # an IPv6 literal
    host_header = host if target.port == default_port else f"{host}:{target.port}"
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, timeout=timeout, retries=False,
                                           server_hostname=target.host, assert_hostname=target.host,
                                           cert_reqs="CERT_REQUIRED", ca_certs=_ca_bundle())
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False)
    with pool:
        response = pool.urlopen("POST", target.path, body=body, headers={**headers, "Host": host_header},
                                redirect=False, retries=False, assert_same_host=False, preload_content=True)
    return response.status


def _ca_bundle() -> str | None:
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()
