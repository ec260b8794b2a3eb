#!/usr/bin/env python3
"""Prints the character vectors of an installed R package's lazy-load data as plain text.

Usage: rdata_text.py DATA_DIR NAME [NAME ...]
  DATA_DIR: the package's data/ folder (holding Rdata.rdx and Rdata.rdb).
  NAME: a data set that is a character vector (one element per line of text).

Standard library only, so scripts/fetch_eval_data.sh needs no R and no pip package. It reads just
what such data sets use: R's XDR serialization (format 2 or 3) of lists, pairlists, symbols and
character/logical/integer/real vectors; anything else is an error naming the type.
"""
import bz2
import gzip
import lzma
import struct
import sys
import zlib

NILVALUE, REF, EMPTYENV, BASEENV, GLOBALENV, UNBOUND, MISSING, BASENS = (
    254, 255, 242, 241, 253, 252, 251, 247)
SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC = 1, 2, 9, 10, 13, 14, 16, 19


class Reader:
    def __init__(self, data):
        self.data, self.pos, self.refs = data, 0, []

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError("truncated R serialization")
        self.pos += n
        return chunk

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two ints, upper then lower
            upper, lower = self.int(), self.int()
            n = (upper << 32) + (lower & 0xFFFFFFFF)
        return n

    def header(self):
        if self.take(2) != b"X\n":
            raise ValueError("not an XDR R serialization")
        version = self.int()
        self.int(), self.int()  # writer's and minimum R versions
        if version == 3:
            self.take(self.int())  # native encoding name

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (NILVALUE, EMPTYENV, BASEENV, GLOBALENV, UNBOUND, MISSING, BASENS):
            return None
        if kind == REF:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == LIST:  # pairlist: attributes, tag, value, then the rest of the list
            out = {}
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag if tag is not None else len(out)] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
                if kind == NILVALUE:
                    return out
                if kind != LIST:
                    raise ValueError(f"pairlist ends in R type {kind}")
        if kind == CHAR:
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", "replace")
        if kind in (LGL, INT):
            n = self.length()
            value = list(struct.unpack(f">{n}i", self.take(4 * n)))
        elif kind == REAL:
            n = self.length()
            value = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif kind in (STR, VEC):
            value = [self.item() for _ in range(self.length())]
        else:
            raise ValueError(f"R type {kind} is not supported")
        if has_attr:
            attributes = self.item()
            names = attributes.get("names") if isinstance(attributes, dict) else None
            if kind == VEC and names:
                value = dict(zip(names, value))
        return value


def unserialize(data):
    reader = Reader(data)
    reader.header()
    return reader.item()


def decompress(blob, compressed):
    """One lazy-load database entry: 4 bytes of length, then the stream (R's lazyLoadDBinsert)."""
    size = struct.unpack(">I", blob[:4])[0]
    if compressed in (True, 1):
        data = zlib.decompress(blob[4:])
    else:  # compress = 2 or 3: a type byte, then bzip2 ('2'), xz ('Z') or stored ('0')
        kind, body = blob[4:5], blob[5:]
        data = {b"2": bz2.decompress, b"Z": lzma.decompress, b"0": bytes}[kind](body)
    if len(data) != size:
        raise ValueError("lazy-load entry has the wrong length")
    return data


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folder, names = sys.argv[1], sys.argv[2:]
    with gzip.open(f"{folder}/Rdata.rdx") as f:
        index = unserialize(f.read())
    compressed = index["compressed"][0]
    with open(f"{folder}/Rdata.rdb", "rb") as f:
        database = f.read()
    for name in names:
        if name not in index["variables"]:
            sys.exit(f"rdata_text: no data set '{name}' in {folder}")
        offset, length = index["variables"][name]
        lines = unserialize(decompress(database[offset:offset + length], compressed))
        if not isinstance(lines, list) or not all(isinstance(x, (str, type(None))) for x in lines):
            sys.exit(f"rdata_text: '{name}' is not a character vector")
        sys.stdout.write("\n".join(x or "" for x in lines) + "\n")


if __name__ == "__main__":
    main()
