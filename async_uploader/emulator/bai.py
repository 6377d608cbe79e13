"""A BAI index of a coordinate-sorted BAM, built as the BAM's bytes stream by (SAM/BAM format specification, 5.2).

The BAM is read as BGZF blocks; each alignment's reference, start and the reference length of its CIGAR give
its bin (``reg2bin``) and the 16 kbp windows it covers, and the virtual offsets (block offset << 16 | offset in
the block) of its first and next byte make the chunks. Chunks of one bin that touch are joined; the pseudo-bin
37450 of each reference holds its first and last offsets and its mapped and unmapped counts; unplaced reads
are counted at the end. A BAM that is not BGZF, not BAM or not sorted by coordinate gets no index.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

PSEUDO_BIN = 37450
WINDOW_SHIFT = 14
REFERENCE_OPS = frozenset((0, 2, 3, 7, 8))  # M, D, N, =, X consume the reference
BLOCK_HEADER = struct.Struct("<4BI2BH")  # magic 1f 8b, CM, FLG, MTIME, XFL, OS, XLEN
RECORD_HEAD = struct.Struct("<iiBBHHHi")  # refID, pos, l_read_name, mapq, bin, n_cigar_op, flag, l_seq


class NotIndexable(Exception):
    """The source cannot be indexed (not BGZF, not BAM, or not sorted by coordinate)."""


def reg2bin(beg: int, end: int) -> int:
    """The smallest bin holding [beg, end) (0-based, end exclusive), as the specification computes it."""
    end -= 1
    for shift, offset in ((14, 4681), (17, 585), (20, 73), (23, 9), (26, 1)):
        if beg >> shift == end >> shift:
            return offset + (beg >> shift)
    return 0


@dataclass
class Reference:
    bins: dict[int, list[list[int]]] = field(default_factory=dict)
    windows: dict[int, int] = field(default_factory=dict)
    first: int = -1
    last: int = 0
    mapped: int = 0
    unmapped: int = 0

    def add(self, beg: int, end: int, start: int, stop: int, mapped: bool) -> None:
        chunks = self.bins.setdefault(reg2bin(beg, end), [])
        if chunks and chunks[-1][1] == start:
            chunks[-1][1] = stop
        else:
            chunks.append([start, stop])
        if mapped:
            self.mapped += 1
            for window in range(beg >> WINDOW_SHIFT, ((end - 1) >> WINDOW_SHIFT) + 1):
                self.windows.setdefault(window, start)
        else:
            self.unmapped += 1
        if self.first < 0:
            self.first = start
        self.last = stop

    def encode(self) -> bytes:
        if self.first < 0:
            return struct.pack("<ii", 0, 0)
        out = [struct.pack("<i", len(self.bins) + 1)]
        for number in sorted(self.bins):
            chunks = merged(self.bins[number])
            out.append(struct.pack("<Ii", number, len(chunks)))
            out += [struct.pack("<QQ", beg, end) for beg, end in chunks]
        out.append(struct.pack("<Ii", PSEUDO_BIN, 2))
        out.append(struct.pack("<QQQQ", self.first, self.last, self.mapped, self.unmapped))
        count = max(self.windows) + 1 if self.windows else 0
        out.append(struct.pack("<i", count))
        offset = self.first
        for window in range(count):
            offset = self.windows.get(window, offset)
            out.append(struct.pack("<Q", offset))
        return b"".join(out)


def merged(chunks: list[list[int]]) -> list[list[int]]:
    """Chunks of one bin joined where one ends in the BGZF block the next starts in (a reader starts there anyway)."""
    out: list[list[int]] = []
    for beg, end in sorted(chunks):
        if out and out[-1][1] >> 16 >= beg >> 16:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([beg, end])
    return out


class BaiBuilder:
    """``update()`` with a BAM's bytes in order, then ``finish()`` → the BAI; NotIndexable when it cannot be."""

    def __init__(self) -> None:
        self._compressed = bytearray()
        self._coffset = 0  # file offset of the first byte of ``_compressed``
        self._data = bytearray()  # uncompressed bytes not yet parsed
        self._blocks: list[tuple[int, int, int]] = []  # (file offset, uncompressed start, size) of kept blocks
        self._ustart = 0  # uncompressed position of ``_data[0]``
        self._uend = 0
        self._end_coffset = 0
        self._references: list[Reference] | None = None
        self._last = (-1, -1)
        self._no_coordinate = 0

    def update(self, chunk: bytes) -> None:
        self._compressed += chunk
        try:
            while self._next_block():
                self._parse()
        except struct.error:  # a length field that points past its record
            raise NotIndexable("an alignment record is cut short") from None

    def _next_block(self) -> bool:
        if len(self._compressed) < BLOCK_HEADER.size:
            return False
        magic1, magic2, method, flags, _, _, _, xlen = BLOCK_HEADER.unpack_from(self._compressed)
        if (magic1, magic2, method) != (0x1F, 0x8B, 8) or not flags & 4:
            raise NotIndexable("not BGZF: a block lacks the gzip header with an extra field")
        extra_end = BLOCK_HEADER.size + xlen
        if len(self._compressed) < extra_end:
            return False
        size = self._block_size(bytes(self._compressed[BLOCK_HEADER.size : extra_end]))
        if len(self._compressed) < size:
            return False
        block = bytes(self._compressed[:size])
        del self._compressed[:size]
        try:
            data = zlib.decompress(block[extra_end:-8], -15)
        except zlib.error:
            raise NotIndexable("a BGZF block does not inflate") from None
        if data:
            self._blocks.append((self._coffset, self._uend, len(data)))
            self._data += data
            self._uend += len(data)
        self._coffset += size
        self._end_coffset = self._coffset
        return True

    @staticmethod
    def _block_size(extra: bytes) -> int:
        at = 0
        while at + 4 <= len(extra):
            ident, length = extra[at : at + 2], struct.unpack_from("<H", extra, at + 2)[0]
            if ident == b"BC" and length == 2:
                return int(struct.unpack_from("<H", extra, at + 4)[0]) + 1
            at += 4 + length
        raise NotIndexable("not BGZF: a block has no BC (block size) field")

    def _voffset(self, position: int) -> int:
        for coffset, start, size in self._blocks:
            if start <= position < start + size:
                return coffset << 16 | (position - start)
        return self._end_coffset << 16

    def _take(self, count: int) -> bytes | None:
        if len(self._data) < count:
            return None
        taken = bytes(self._data[:count])
        del self._data[:count]
        self._ustart += count
        while self._blocks and self._blocks[0][1] + self._blocks[0][2] <= self._ustart:
            self._blocks.pop(0)
        return taken

    def _parse(self) -> None:
        if self._references is None and not self._header():
            return
        assert self._references is not None
        while len(self._data) >= 4:
            size = struct.unpack_from("<i", self._data)[0]
            if size < RECORD_HEAD.size or len(self._data) < 4 + size:
                if size < RECORD_HEAD.size:
                    raise NotIndexable("an alignment record is shorter than its fixed fields")
                return
            start = self._voffset(self._ustart)
            record = self._take(4 + size)
            assert record is not None
            self._record(record[4:], start, self._voffset(self._ustart))

    def _header(self) -> bool:
        data = self._data
        if len(data) < 12:
            return False
        if data[:4] != b"BAM\x01":
            raise NotIndexable("not BAM: no BAM\\1 magic")
        text = struct.unpack_from("<i", data, 4)[0]
        if text < 0:
            raise NotIndexable("not BAM: a negative header length")
        at = 8 + text
        if len(data) < at + 4:
            return False
        count = struct.unpack_from("<i", data, at)[0]
        at += 4
        if count < 0:
            raise NotIndexable("not BAM: a negative reference count")
        for _ in range(count):
            if len(data) < at + 4:
                return False
            name = struct.unpack_from("<i", data, at)[0]
            if name < 1:
                raise NotIndexable("not BAM: a reference without a name")
            at += 4 + name + 4
        if len(data) < at:
            return False
        self._take(at)
        self._references = [Reference() for _ in range(count)]
        return True

    def _record(self, record: bytes, start: int, stop: int) -> None:
        assert self._references is not None
        ref, pos, name_length, _, _, n_cigar, flag, _ = RECORD_HEAD.unpack_from(record)
        if ref < 0:
            self._no_coordinate += 1
            self._last = (len(self._references), 0)
            return
        if ref >= len(self._references) or (ref, pos) < self._last:
            raise NotIndexable("the BAM is not sorted by coordinate")
        self._last = (ref, pos)
        at = RECORD_HEAD.size + 12 + name_length
        cigar = struct.unpack_from(f"<{n_cigar}I", record, at) if n_cigar else ()
        length = sum(op >> 4 for op in cigar if op & 0xF in REFERENCE_OPS)
        beg = max(pos, 0)
        end = beg + (1 if flag & 4 else max(length, 1))
        self._references[ref].add(beg, end, start, stop, mapped=not flag & 4)

    def finish(self) -> bytes:
        if self._references is None or self._data or self._compressed:
            raise NotIndexable("the BAM ends inside its header or a record")
        parts = [b"BAI\x01", struct.pack("<i", len(self._references))]
        parts += [reference.encode() for reference in self._references]
        parts.append(struct.pack("<Q", self._no_coordinate))
        return b"".join(parts)
