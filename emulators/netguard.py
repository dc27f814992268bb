"""Network guard: no test may send a byte anywhere but loopback.

An audit hook (it cannot be removed once added, and sees every socket in every thread,
including asyncio's) refuses ``connect``/``sendto`` to non-loopback addresses and name
look-ups of non-loopback hosts (a DNS query is itself a packet off the machine).
pytest-socket's ``--allow-hosts`` (pyproject.toml) is a second, independent layer.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_installed = False


class NetworkGuardError(ConnectionRefusedError):
    """A test tried to reach a non-loopback address."""


def is_loopback(host: object) -> bool:
    if host is None or host == "":
        return True  # getaddrinfo(None, port) is a local wildcard, never a look-up
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _address_host(address: Any) -> object:
    if isinstance(address, tuple) and address:
        return address[0]
    return None  # AF_UNIX paths and socketpairs stay on the machine


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1] if len(args) > 1 else None
        family = getattr(sock, "family", None)
        if family in (socket.AF_INET, socket.AF_INET6) and address is not None:
            host = _address_host(address)
            if not is_loopback(host):
                raise NetworkGuardError(f"network guard: refused {event} to {address!r} (loopback only)")
    elif event == "socket.getaddrinfo" and not is_loopback(args[0]):
        raise NetworkGuardError(f"network guard: refused name look-up of {args[0]!r} (loopback only)")


def install() -> None:
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
