"""PROXY protocol headers (v1 text, v2 binary) sent to a backend before the client's bytes.

So a backend behind the balancer can see the client's address (HAProxy's C{send-proxy} and
C{send-proxy-v2}).  Off by default; a host turns it on with C{proxy_protocol=1} or C{2}.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["V2_SIGNATURE", "header", "headerV1", "headerV2", "parseV1", "parseV2"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def headerV1(src: Any, dst: Any) -> bytes:
    """C{PROXY TCP4 src dst sport dport\\r\\n} (or C{PROXY UNKNOWN} for non-IP peers)."""
    if getattr(src, "type", None) not in ("TCP",) or getattr(dst, "type", None) not in ("TCP",):
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP6" if _family(src.host) == socket.AF_INET6 else "TCP4"
    return f"PROXY {proto} {src.host} {dst.host} {src.port} {dst.port}\r\n".encode("ascii")


def headerV2(src: Any, dst: Any) -> bytes:
    """The binary v2 header: signature, PROXY command, TCP over IPv4/IPv6 addresses."""
    if getattr(src, "type", None) != "TCP" or getattr(dst, "type", None) != "TCP":
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)  # LOCAL
    if _family(src.host) == socket.AF_INET6 or _family(dst.host) == socket.AF_INET6:
        s = socket.inet_pton(socket.AF_INET6, _v6(src.host))
        d = socket.inet_pton(socket.AF_INET6, _v6(dst.host))
        body = s + d + struct.pack("!HH", src.port, dst.port)
        fam = 0x21
    else:
        ports = struct.pack("!HH", src.port, dst.port)
        body = socket.inet_aton(src.host) + socket.inet_aton(dst.host) + ports
        fam = 0x11
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def _v6(ip: str) -> str:
    return ip if ":" in ip else "::ffff:" + ip


def header(version: int, src: Any, dst: Any) -> bytes:
    """The header of a version (1 or 2)."""
    if version == 1:
        return headerV1(src, dst)
    if version == 2:
        return headerV2(src, dst)
    raise ValueError(f"PROXY protocol version must be 1 or 2, not {version!r}")


def parseV1(line: bytes) -> tuple[str, str, int, int]:
    """Parse a v1 line (for backends and tests): (src ip, dst ip, src port, dst port)."""
    parts = line.rstrip(b"\r\n").decode("ascii").split(" ")
    if parts[0] != "PROXY" or parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ValueError(f"not a PROXY v1 line: {line!r}")
    return parts[2], parts[3], int(parts[4]), int(parts[5])


def parseV2(data: bytes) -> tuple[tuple[str, str, int, int], int]:
    """Parse a v2 header: ((src, dst, sport, dport), header length)."""
    if not data.startswith(V2_SIGNATURE) or len(data) < 16:
        raise ValueError("not a PROXY v2 header")
    ver_cmd, fam = data[12], data[13]
    (length,) = struct.unpack("!H", data[14:16])
    body = data[16 : 16 + length]
    if ver_cmd != 0x21:
        raise ValueError("not a PROXY command")
    if fam == 0x11:
        src, dst = socket.inet_ntoa(body[0:4]), socket.inet_ntoa(body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
    elif fam == 0x21:
        src = socket.inet_ntop(socket.AF_INET6, body[0:16])
        dst = socket.inet_ntop(socket.AF_INET6, body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
    else:
        raise ValueError(f"unsupported family {fam:#x}")
    return (src, dst, sport, dport), 16 + length
