"""Length-prefixed frames for one request and its answer on a libp2p stream.

A frame is a 4-byte big-endian length followed by that many bytes.  The reader checks the
length against `MAX_FRAME` before it reads (and so before it allocates) the body, and treats a
stream that closes mid-frame as an unreachable peer.  An answer frame starts with one status
byte: `OK` then the handler's bytes, or `ERR` then a short reason in UTF-8.

No libp2p import: a stream is anything with `async read(n)`, which keeps this testable alone.
"""

from __future__ import annotations

import struct
from typing import Any

from swarm.transport import PeerUnreachable

MAX_FRAME = 8 * 1024 * 1024  # request/response frames above this are refused
OK, ERR = b"\x00", b"\x01"  # first byte of an answer
_LEN = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """`payload` with its length prefix, ready for one `stream.write`."""
    return _LEN.pack(len(payload)) + payload


async def read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise PeerUnreachable("stream closed mid-frame")
        buf += chunk
    return bytes(buf)


async def read_frame(stream: Any) -> bytes:
    (n,) = _LEN.unpack(await read_exact(stream, 4))
    if n > MAX_FRAME:
        raise PeerUnreachable(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return await read_exact(stream, n)
