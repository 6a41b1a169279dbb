"""Which endpoints a remote tier may point at: the server-side request forgery (SSRF) guard.

A tier's endpoint is a URL an administrator gives the server, which then sends requests there
(signed with the tier's credentials) from inside the network. Pointed at a cloud metadata
service or a link-local address, that is a known way to steal the host's credentials (the
"SSRF through a replication or tier target" breaches of other stores). So ``check_endpoint``:

- accepts ``http`` and ``https`` only, with a host and no ``user:password@`` part;
- refuses the cloud metadata names (``metadata.google.internal``, ...) before any lookup;
- resolves the host (every address it has, IPv4 and IPv6) and refuses the tier if *any*
  address is a cloud metadata address, link-local, multicast, unspecified, broadcast or
  reserved; and, unless ``allow_private``, loopback, private (RFC 1918, unique local) or shared
  (CGNAT, 100.64.0.0/10) addresses. IPv4 addresses inside IPv6 (mapped, NAT64) are judged as
  the IPv4 address they carry.

It is run when a tier is added and by the remote blob store on each (re)connection (its
``endpoint_guard``), so a name that later resolves elsewhere (DNS rebinding) is caught at the
next connection. Errors name the host and the reason, never the URL's credentials or path.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from tierstore.errors import InvalidArgument

__all__ = ["METADATA_ADDRESSES", "METADATA_HOSTS", "EndpointRefused", "check_endpoint", "refusal_reason"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Cloud instance metadata services: always refused, even with allow_private.
METADATA_HOSTS = frozenset(
    {
        "metadata",  # GCP's short name
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",  # AWS
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


class EndpointRefused(InvalidArgument):
    """The tier endpoint is not allowed (scheme, credentials in the URL, or where its host resolves)."""

    code = "InvalidArgument"


def _embedded_v4(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped ``::ffff:a.b.c.d``, NAT64), else itself."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr in _NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def refusal_reason(addr: IPAddress, *, allow_private: bool) -> str | None:
    """Why a tier may not connect to ``addr`` (None: it may)."""
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    inner = _embedded_v4(addr)
    if inner is not addr:
        reason = refusal_reason(inner, allow_private=allow_private)
        return f"an IPv6 address carrying {inner}, {reason}" if reason else None
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_unspecified:
        return "the unspecified address"
    if addr == _BROADCAST:
        return "the broadcast address"
    if addr.is_loopback:  # before is_reserved: ::1 is inside the reserved ::/8
        return None if allow_private else "a loopback address (allow it with --allow-private-endpoint)"
    if addr.is_reserved:
        return "a reserved address"
    if allow_private:
        return None
    if isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED:
        return "a shared (CGNAT) address (allow it with --allow-private-endpoint)"
    if addr.is_private or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local):
        return "a private address (allow it with --allow-private-endpoint)"
    return None


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_endpoint(url: str, *, allow_private: bool, resolve: Resolver = _resolve) -> None:
    """Raise ``EndpointRefused`` unless a tier may send requests to ``url`` (module docstring).
    ``resolve(host, port)``: the host's addresses (default: ``getaddrinfo``, blocking: call it
    from a thread on an event loop)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointRefused("The tier endpoint is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointRefused("The tier endpoint must be an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise EndpointRefused(
            "The tier endpoint must not carry credentials (user:password@); give them as the tier's keys."
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointRefused("The tier endpoint has no host.")
    if host in METADATA_HOSTS:
        raise EndpointRefused(f"The tier endpoint host {host} is a cloud metadata service.")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in resolve(host, port)]
        except (OSError, UnicodeError, ValueError):
            raise EndpointRefused(f"The tier endpoint host {host} does not resolve.") from None
        if not addresses:
            raise EndpointRefused(f"The tier endpoint host {host} does not resolve.")
    for addr in addresses:
        reason = refusal_reason(addr, allow_private=allow_private)
        if reason is not None:
            shown = host if literal is not None else f"{host} ({addr})"
            raise EndpointRefused(f"The tier endpoint {shown} is {reason}.")
