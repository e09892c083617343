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


# Every first byte is classified once: (kind, n) where n is the scalar's total size, the inline
# length of a fix* type, or the width of the big-endian length field that follows.
_SCALAR, _STR, _BIN, _ARRAY, _MAP, _INVALID = range(6)


def _classify(b: int) -> tuple[int, int, bool]:
    """(kind, n, inline) for first byte `b`."""
    if b <= 0x7F or b >= 0xE0:
        return _SCALAR, 1, True  # positive / negative fixint
    if b <= 0x8F:
        return _MAP, b & 0x0F, True
    if b <= 0x9F:
        return _ARRAY, b & 0x0F, True
    if b <= 0xBF:
        return _STR, b & 0x1F, True
    fixed = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
             0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}  # fmt: skip  # nil, bools, floats, ints
    if b in fixed:
        return _SCALAR, fixed[b], True
    sized = {0xC4: (_BIN, 1), 0xC5: (_BIN, 2), 0xC6: (_BIN, 4), 0xD9: (_STR, 1), 0xDA: (_STR, 2),
             0xDB: (_STR, 4), 0xDC: (_ARRAY, 2), 0xDD: (_ARRAY, 4), 0xDE: (_MAP, 2), 0xDF: (_MAP, 4)}  # fmt: skip
    if b in sized:
        kind, width = sized[b]
        return kind, width, False
    return _INVALID, 0, True  # 0xc1 (never used) and every ext type


_TABLE = [_classify(b) for b in range(256)]


def _fail(reason: RejectReason, detail: str) -> ProtocolError:
    return ProtocolError(reason, detail)


def scan(data: bytes, limits: ScanLimits) -> None:
    """Raise `ProtocolError` unless `data` is one well-formed msgpack object within `limits`."""
    n = len(data)
    pos = 0
    remaining: list[int] = []  # objects still to read in each open container (maps count 2 per entry)
    is_map: list[bool] = []
    elements = 0
    table = _TABLE
    max_elements = limits.max_elements
    while True:
        if pos >= n:
            raise _fail(RejectReason.MALFORMED, f"truncated at byte {pos}")
        elements += 1
        if elements > max_elements:
            raise _fail(RejectReason.TOO_MANY_ELEMENTS, f"more than {max_elements} objects")
        if remaining:
            left = remaining[-1]
            key_slot = is_map[-1] and not left & 1  # maps alternate key, value from an even count
            remaining[-1] = left - 1
        else:
            key_slot = False
        b = data[pos]
        kind, size, inline = table[b]
        if key_slot and kind != _STR:
            raise _fail(RejectReason.MALFORMED, f"map key is not a str (0x{b:02x})")
        if kind == _SCALAR:
            pos += size
            if pos > n:
                raise _fail(RejectReason.MALFORMED, "truncated scalar")
            count = 0
        elif kind == _INVALID:
            raise _fail(RejectReason.MALFORMED, f"reserved or ext type 0x{b:02x}")
        else:
            if inline:
                length, head = size, 1
            else:
                length, head = _read_len(data, pos, size)
                if length < 0:
                    raise _fail(RejectReason.MALFORMED, "truncated length")
            pos += head
            if kind == _STR or kind == _BIN:
                cap = limits.max_str_len if kind == _STR else limits.max_bin_len
                if length > cap:
                    kind_name = "str" if kind == _STR else "bin"
                    raise _fail(RejectReason.LENGTH_LIMIT, f"{kind_name} of {length} bytes > {cap}")
                pos += length
                if pos > n:
                    raise _fail(RejectReason.MALFORMED, "truncated str/bin")
                count = 0
            else:
                count = length
        if count:
            container_is_map = kind == _MAP
            cap = limits.max_map_len if container_is_map else limits.max_array_len
            if count > cap:
                kind_name = "map" if container_is_map else "array"
                raise _fail(RejectReason.LENGTH_LIMIT, f"{kind_name} of {count} entries > {cap}")
            if len(remaining) >= limits.max_depth:
                raise _fail(RejectReason.TOO_DEEP, f"nesting deeper than {limits.max_depth}")
            remaining.append(2 * count if container_is_map else count)
            is_map.append(container_is_map)
            continue
        while remaining and not remaining[-1]:
            remaining.pop()
            is_map.pop()
        if not remaining:
            break
    if pos != n:
        raise _fail(RejectReason.MALFORMED, f"{n - pos} trailing bytes")


def _read_len(data: bytes, pos: int, width: int) -> tuple[int, int]:
    """Big-endian length of `width` bytes after the type byte, and the header size; (-1, 0) when truncated."""
    if pos + 1 + width > len(data):
        return -1, 0
    if width == 1:
        return data[pos + 1], 2
    if width == 2:
        return _U16.unpack_from(data, pos + 1)[0], 3
    return _U32.unpack_from(data, pos + 1)[0], 5
