"""The address a request came from, for limits that are kept per client.

A direct gRPC caller is its connection's peer. REST requests arrive from Envoy,
which runs beside the server (a loopback peer) with ``use_remote_address`` on:
it appends the address of the connection it accepted to ``x-forwarded-for``, so
the LAST entry is Envoy's own observation; anything before it is what the client
claimed and is ignored. The header is believed only from a loopback peer, so a
remote gRPC caller cannot pick its own address.
"""

from __future__ import annotations

import ipaddress

FORWARDED_FOR = "x-forwarded-for"


def _peer_host(peer: str) -> str:
    """``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``, ``unix:/path`` → the host part."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: str | None) -> str:
    """The client's address as text (normalised), or the raw peer if it is not an IP."""
    host = _peer_host(peer)
    peer_ip = _ip(host)
    if peer_ip is None:
        return host  # a unix socket: local, one bucket
    if peer_ip.is_loopback and forwarded_for:
        last = _ip(forwarded_for.rpartition(",")[2])
        if last is not None:
            return str(last)
    return str(peer_ip)
