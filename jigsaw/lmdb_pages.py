"""Caffe's LMDBs (data.mdb) read page by page in Python, every page number, offset and length checked against
the file: the LMDB C library trusts the file it maps and dies of SIGBUS or SIGSEGV on a damaged one.

Layout (LMDB's mdb.c, a 64-bit little-endian build, what Caffe's convert_imageset writes): pages of `psize`
bytes; pages 0 and 1 are meta pages (the newer transaction wins) naming the main database's root page; branch
pages hold (key, child page) nodes, leaf pages (key, value) nodes; a large value sits on overflow pages.
"""
import mmap
import os
import struct
from typing import Iterator, List, Tuple

from tools.run.errors import UserError

MAGIC, VERSION = 0xBEEFC0DE, 1
HEADER = 16  # a page header: page number u64, pad u16, flags u16, lower u16 + upper u16 (or pages u32)
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x20
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
NODE = 8  # a node header: lo u16, hi u16, flags u16, key size u16
MAX_DEPTH = 64
INVALID = (1 << 64) - 1


class LmdbPages:
    """The records of a single-database LMDB, in key order, read from its data.mdb through a memory map."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, "data.mdb")
        try:
            with open(self.path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                if self.size < 2 * HEADER + 136:
                    raise self._bad(f"{self.size} bytes, shorter than LMDB's two meta pages")
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise UserError(f"{self.path}: cannot read ({e.strerror or e})") from None
        self.psize, self.last, self.root, self.depth, self.entries = self._meta()
        self.pages = min(self.size // self.psize, self.last + 1)
        self._leaves = self._walk()
        self._values = self._locate()

    def _bad(self, why: str) -> UserError:
        return UserError(f"{self.path}: not a readable LMDB ({why})")

    def _meta(self):
        """(page size, last page, main root, depth, entries) of the newer of the two meta pages."""
        best = None
        probe = struct.unpack_from("<I", self.map, HEADER + 24)[0]  # the first meta page's page size
        for offset in (0, probe if probe in (4096, 8192, 16384, 32768, 65536) else None):
            if offset is None or offset + HEADER + 152 > self.size:
                continue
            flags = struct.unpack_from("<H", self.map, offset + 10)[0]
            magic, version = struct.unpack_from("<II", self.map, offset + HEADER)
            if not flags & P_META or magic != MAGIC or version != VERSION:
                continue
            psize = struct.unpack_from("<I", self.map, offset + HEADER + 24)[0]  # the free db's pad: the page size
            main = struct.unpack_from("<IHHQQQQQ", self.map, offset + HEADER + 72)
            last, txnid = struct.unpack_from("<QQ", self.map, offset + HEADER + 120)
            if best is None or txnid > best[0]:
                best = (txnid, psize, last, main)
        if best is None:
            raise self._bad("no valid meta page: magic 0xBEEFC0DE, version 1")
        _, psize, last, (_, db_flags, depth, _, _, _, entries, root) = best
        if psize not in (4096, 8192, 16384, 32768, 65536) or psize != probe:
            raise self._bad(f"page size {psize}")
        if db_flags & 0x04 or db_flags & 0x08:  # MDB_DUPSORT / MDB_INTEGERKEY: not Caffe's plain key-value store
            raise self._bad(f"database flags {db_flags:#x}; Caffe's LMDBs are plain key -> value")
        if depth > MAX_DEPTH:
            raise self._bad(f"a tree {depth} levels deep")
        return psize, last, root, depth, entries

    def _page(self, number: int, expect: int) -> Tuple[int, int, int, int]:
        """(offset, flags, lower, upper) of page `number`, checked to exist and to be of kind `expect`."""
        if not 2 <= number < self.pages:
            raise self._bad(f"page {number} is outside the file's {self.pages} pages")
        offset = number * self.psize
        pgno, _, flags, lower, upper = struct.unpack_from("<QHHHH", self.map, offset)
        if pgno != number or not flags & expect or flags & P_LEAF2:
            raise self._bad(f"page {number} is not the {'branch or leaf' if expect != P_OVERFLOW else 'overflow'} "
                            f"page it should be (number {pgno}, flags {flags:#x})")
        if expect != P_OVERFLOW and not HEADER <= lower <= upper <= self.psize:
            raise self._bad(f"page {number} has bounds {lower}..{upper}")
        return offset, flags, lower, upper

    def _nodes(self, number: int, expect: int) -> Iterator[Tuple[int, int, int, int, int]]:
        """(flags of the page, node flags, lo | hi << 16, key start, key size) of each node of a page."""
        offset, flags, lower, _ = self._page(number, expect)
        for k in range((lower - HEADER) // 2):
            at = struct.unpack_from("<H", self.map, offset + HEADER + 2 * k)[0]
            if not lower <= at <= self.psize - NODE:
                raise self._bad(f"page {number}: node {k} at {at} lies outside its page")
            lo, hi, node_flags, ksize = struct.unpack_from("<HHHH", self.map, offset + at)
            if at + NODE + ksize > self.psize:
                raise self._bad(f"page {number}: node {k}'s key runs past its page")
            yield flags, node_flags, lo | hi << 16, offset + at + NODE, ksize

    def _walk(self) -> List[Tuple[int, int, int, int]]:
        """Every record as (key start, key size, node flags, value size), in key order, each page visited once."""
        if self.root == INVALID:
            return []
        records, seen, stack = [], set(), [(self.root, 0)]
        while stack:
            number, level = stack.pop()
            if number in seen or level > self.depth:
                raise self._bad(f"page {number} is reached twice or below the tree's depth {self.depth}")
            seen.add(number)
            children = []
            for flags, node_flags, value, key, ksize in self._nodes(number, P_BRANCH | P_LEAF):
                if flags & P_BRANCH:
                    children.append((value | node_flags << 32, level + 1))
                elif node_flags & (F_SUBDATA | F_DUPDATA):
                    raise self._bad("records with duplicate keys or sub-databases; Caffe's LMDBs hold neither")
                else:
                    records.append((key, ksize, node_flags, value))
            stack.extend(reversed(children))
        if len(records) != self.entries:
            raise self._bad(f"{len(records)} records found where the meta page counts {self.entries}")
        return records

    def __len__(self) -> int:
        return len(self._leaves)

    def keys(self) -> List[bytes]:
        return [self.map[key:key + ksize] for key, ksize, _, _ in self._leaves]

    def value(self, index: int) -> bytes:
        """The value of record `index` (its place was checked when the LMDB was opened)."""
        start, size = self._values[index]
        return self.map[start:start + size]

    def _locate(self) -> List[Tuple[int, int]]:
        """(start, size) of every value, checked to lie inside its page or its overflow pages."""
        places = []
        for index, (key, ksize, node_flags, size) in enumerate(self._leaves):
            at, page_end = key + ksize, (key // self.psize + 1) * self.psize
            if not node_flags & F_BIGDATA:
                if at + size > page_end:
                    raise self._bad(f"record {index}'s value runs past its page")
                places.append((at, size))
                continue
            if at + 8 > page_end:
                raise self._bad(f"record {index}'s overflow page number runs past its page")
            first = struct.unpack_from("<Q", self.map, at)[0]
            offset = self._page(first, P_OVERFLOW)[0]
            count = struct.unpack_from("<I", self.map, offset + 12)[0]
            if first + count > self.pages or HEADER + size > count * self.psize:
                raise self._bad(f"record {index}'s {size} bytes do not fit its {count} overflow pages")
            places.append((offset + HEADER, size))
        return places

    def close(self) -> None:
        self.map.close()
