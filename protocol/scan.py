"""Structural scan of untrusted msgpack bytes, run before msgpack is allowed to decode them.

msgpack's own limits cap each str/bin/array/map length but not nesting depth or the total
number of objects, so 4 MiB of `0x91` bytes would decode into millions of lists.  This scan
walks the byte string once, allocating nothing from it, and refuses it unless it is exactly one
msgpack object that:

* is not truncated and has no trailing bytes;
* uses no ext types and no reserved byte (0xc1);
* nests containers at most `max_depth` deep and holds at most `max_elements` objects;
* has every str, bin, array and map within its length cap, and only str keys in maps.

A peer in another language implements the same rules (docs/protocol.md, "Structural limits").
The walk costs about half a microsecond per msgpack object; our payloads keep bulk data (token
ids, logprobs) in `bin` fields so a typical group is ~150 objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocol.errors import ProtocolError, RejectReason

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Caps for one scan; the codec derives one per decoding step from `Limits`."""

    max_depth: int
    max_elements: int
    max_str_len: int
    max_bin_len: int
    max_array_len: int
    max_map_len: int


# Fixed-size scalars: first byte -> total bytes (nil, bools, floats, ints).
_FIXED: dict[int, int] = {
    0xC0: 1, 0xC2: 1, 0xC3: 1,
    0xCA: 5, 0xCB: 9,
    0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
    0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,
}  # fmt: skip


def _fail(reason: RejectReason, detail: str) -> ProtocolError:
    return ProtocolError(reason, detail)


def scan(data: bytes, limits: ScanLimits) -> None:
    """Raise `ProtocolError` unless `data` is one well-formed msgpack object within `limits`."""
    n = len(data)
    pos = 0
    remaining: list[int] = []  # objects still to read in each open container (maps count 2 per entry)
    is_map: list[bool] = []
    elements = 0
    while True:
        if pos >= n:
            raise _fail(RejectReason.MALFORMED, f"truncated at byte {pos}")
        elements += 1
        if elements > limits.max_elements:
            raise _fail(RejectReason.TOO_MANY_ELEMENTS, f"more than {limits.max_elements} objects")
        key_slot = bool(is_map) and is_map[-1] and remaining[-1] % 2 == 0
        if remaining:
            remaining[-1] -= 1
        b = data[pos]
        count = -1  # >= 0 when this object is a container with `count` entries
        container_is_map = False
        if b <= 0x7F or b >= 0xE0:  # positive / negative fixint
            if key_slot:
                raise _fail(RejectReason.MALFORMED, "map key is not a str")
            pos += 1
        elif 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB):  # str
            if b <= 0xBF:
                length, head = b & 0x1F, 1
            elif b == 0xD9:
                length, head = (data[pos + 1] if pos + 1 < n else -1), 2
            else:
                length, head = _read_len(data, pos, 2 if b == 0xDA else 4)
            if length > limits.max_str_len:
                raise _fail(RejectReason.LENGTH_LIMIT, f"str of {length} bytes > {limits.max_str_len}")
            pos += head + max(length, 0)
            if length < 0 or pos > n:
                raise _fail(RejectReason.MALFORMED, "truncated str")
        elif key_slot:
            raise _fail(RejectReason.MALFORMED, f"map key is not a str (0x{b:02x})")
        elif 0x90 <= b <= 0x9F:
            count, pos = b & 0x0F, pos + 1
        elif 0x80 <= b <= 0x8F:
            count, container_is_map, pos = b & 0x0F, True, pos + 1
        elif b in (0xDC, 0xDD, 0xDE, 0xDF):
            width = 2 if b in (0xDC, 0xDE) else 4
            count, head = _read_len(data, pos, width)
            if count < 0:
                raise _fail(RejectReason.MALFORMED, "truncated container header")
            container_is_map, pos = b >= 0xDE, pos + head
        elif b in (0xC4, 0xC5, 0xC6):  # bin 8/16/32
            width = {0xC4: 1, 0xC5: 2, 0xC6: 4}[b]
            length, head = _read_len(data, pos, width)
            if length > limits.max_bin_len:
                raise _fail(RejectReason.LENGTH_LIMIT, f"bin of {length} bytes > {limits.max_bin_len}")
            pos += head + max(length, 0)
            if length < 0 or pos > n:
                raise _fail(RejectReason.MALFORMED, "truncated bin")
        elif b in _FIXED:
            pos += _FIXED[b]
            if pos > n:
                raise _fail(RejectReason.MALFORMED, "truncated scalar")
        else:  # 0xc1 (never used) and every ext type
            raise _fail(RejectReason.MALFORMED, f"reserved or ext type 0x{b:02x}")
        if count > 0:
            cap = limits.max_map_len if container_is_map else limits.max_array_len
            if count > cap:
                kind = "map" if container_is_map else "array"
                raise _fail(RejectReason.LENGTH_LIMIT, f"{kind} of {count} entries > {cap}")
            if len(remaining) >= limits.max_depth:
                raise _fail(RejectReason.TOO_DEEP, f"nesting deeper than {limits.max_depth}")
            remaining.append(2 * count if container_is_map else count)
            is_map.append(container_is_map)
        while remaining and remaining[-1] == 0:
            remaining.pop()
            is_map.pop()
        if not remaining:
            break
    if pos != n:
        raise _fail(RejectReason.MALFORMED, f"{n - pos} trailing bytes")


def _read_len(data: bytes, pos: int, width: int) -> tuple[int, int]:
    """Big-endian length of `width` bytes after the type byte; (-1, 0) when truncated."""
    if pos + 1 + width > len(data):
        return -1, 0
    if width == 1:
        return data[pos + 1], 2
    if width == 2:
        return _U16.unpack_from(data, pos + 1)[0], 3
    return _U32.unpack_from(data, pos + 1)[0], 5
