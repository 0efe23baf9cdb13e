"""The page headers of a Parquet file, read before pyarrow decodes a page: what each page says it inflates to.

pyarrow allocates a page by its header's `uncompressed_page_size`, not by the footer's totals, which whoever made the
file wrote (a 37 KB file whose footer said 100 bytes a column took 6 GB). A header is a Thrift struct in the compact
protocol (https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md); this reads the two
sizes of each and skips the rest, bounded in depth, length and count.
"""

from __future__ import annotations

from collections.abc import Iterator

MAX_DEPTH = 16  # structs inside structs in a page header: statistics in a data page header is two deep
MAX_PAGES = 1 << 20  # pages in one column chunk (a real one has at most thousands)


class Malformed(ValueError):
    """A page header that is not a Thrift compact struct within the file's bytes."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise Malformed("a varint runs past the page")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _zigzag(buf: bytes, i: int) -> tuple[int, int]:
    u, i = _varint(buf, i)
    return (u >> 1) ^ -(u & 1), i


def _skip(buf: bytes, i: int, kind: int, depth: int) -> int:
    """The position after a value of compact type `kind` at i."""
    if kind in (1, 2):  # booleans: the value is in the type
        return i
    if kind == 3:
        return i + 1
    if kind in (4, 5, 6):
        return _varint(buf, i)[1]
    if kind == 7:
        return i + 8
    if kind == 8:
        n, i = _varint(buf, i)
        return i + n
    if kind in (9, 10):  # list, set: size and element type in one byte (size 15: a varint follows)
        if i >= len(buf):
            raise Malformed("a list runs past the page")
        size, element = buf[i] >> 4, buf[i] & 0x0F
        i += 1
        if size == 15:
            size, i = _varint(buf, i)
        for _ in range(size):
            i = i + 1 if element in (1, 2) else _skip(buf, i, element, depth)
            if i > len(buf):
                raise Malformed("a list runs past the page")
        return i
    if kind == 11:  # map: a varint size, then key and value types in one byte
        size, i = _varint(buf, i)
        if size:
            if i >= len(buf):
                raise Malformed("a map runs past the page")
            key, value = buf[i] >> 4, buf[i] & 0x0F
            i += 1
            for _ in range(size):
                i = _skip(buf, _skip(buf, i, key, depth), value, depth)
                if i > len(buf):
                    raise Malformed("a map runs past the page")
        return i
    if kind == 12:
        return _struct(buf, i, depth + 1)[1]
    raise Malformed(f"unknown Thrift type {kind}")


def _struct(buf: bytes, i: int, depth: int = 0) -> tuple[dict[int, int], int]:
    """(the struct's integer fields by id, the position after it)."""
    if depth > MAX_DEPTH:
        raise Malformed("structs nested too deep")
    fields, last = {}, 0
    while True:
        if i >= len(buf):
            raise Malformed("a struct runs past the page")
        head = buf[i]
        i += 1
        if head == 0:
            return fields, i
        delta, kind = head >> 4, head & 0x0F
        if delta:
            last += delta
        else:
            last, i = _zigzag(buf, i)
        if kind in (4, 5, 6):
            fields[last], i = _zigzag(buf, i)
        else:
            i = _skip(buf, i, kind, depth)
        if i > len(buf):
            raise Malformed("a field runs past the page")


def page_sizes(data: bytes, start: int, length: int) -> Iterator[int]:
    """The uncompressed size each page of a column chunk (`length` bytes from `start`) declares."""
    i, end = start, start + length
    if start < 0 or length < 0 or end > len(data):
        raise Malformed("a column chunk lies outside the file")
    for _ in range(MAX_PAGES):
        if i >= end:
            return
        fields, i = _struct(data, i)
        uncompressed, compressed = fields.get(2, -1), fields.get(3, -1)
        if uncompressed < 0 or compressed < 0:
            raise Malformed("a page header without its sizes")
        yield uncompressed
        i += compressed
    raise Malformed(f"more than {MAX_PAGES:,} pages in a column chunk")
