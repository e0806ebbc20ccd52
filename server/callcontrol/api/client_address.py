"""The address a request came from, for limits that are kept per client.

A direct gRPC caller is its connection's peer. REST requests arrive from Envoy,
which runs beside the server (a loopback peer) with ``use_remote_address`` on:
it appends the address of the connection it accepted to ``x-forwarded-for``, so
the LAST entry is Envoy's own observation; anything before it is what the client
claimed and is ignored. The header is believed only from a loopback peer, so a
remote gRPC caller cannot pick its own address.
"""

from __future__ import annotations

import functools
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


# Every RPC asks, and parsing an address costs more than the rest of the interceptor's checks;
# a connection's peer repeats, and so does the address Envoy saw for one client. Only short
# texts are kept (an address is at most 45 characters), so a client cannot fill the cache.
_CACHED_CHARS = 64


@functools.lru_cache(maxsize=1024)
def _peer_address(peer: str) -> tuple[str, bool]:
    """The peer's address as text and whether it is loopback (the raw host if not an IP)."""
    host = _peer_host(peer)
    peer_ip = _ip(host)
    if peer_ip is None:
        return host, False  # a unix socket: local, one bucket
    return str(peer_ip), peer_ip.is_loopback


@functools.lru_cache(maxsize=1024)
def _address_text(text: str) -> str | None:
    ip = _ip(text)
    return None if ip is None else str(ip)


def client_address(peer: str, forwarded_for: str | None) -> str:
    """The client's address as text (normalised), or the raw peer if it is not an IP."""
    address, loopback = _peer_address(peer) if len(peer) <= _CACHED_CHARS else _peer_address.__wrapped__(peer)
    if loopback and forwarded_for:
        last_hop = forwarded_for.rpartition(",")[2]
        last = (
            _address_text(last_hop) if len(last_hop) <= _CACHED_CHARS else _address_text.__wrapped__(last_hop)
        )
        if last is not None:
            return last
    return address
