#!/usr/bin/env python3
"""Writes the seed corpus of virtqueue_fuzz (fuzz/corpus/virtqueue).

Each seed is a small, well-formed starting point in the input format that
fuzz/virtqueue_fuzz.cpp describes: a 40-byte header, then a guest memory
image. Run it again after changing the format.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "virtqueue")

DESC, AVAIL, USED, DATA, TABLE = 0x100, 0x300, 0x400, 0x800, 0x600
NEXT, WRITE, INDIRECT = 1, 2, 4
EVENT_IDX, INDIRECT_DESC = 1, 2


class Guest:
    def __init__(self, size_log2=3, feat=0, next_idx=0, mem=0x1000):
        self.size = 1 << size_log2
        self.cfg = size_log2
        self.feat = feat
        self.next_idx = next_idx
        self.avail_idx = next_idx
        self.mem = bytearray(mem)
        self.rw_offset = 0
        self.actions = 0

    def put(self, addr, fmt, *vals):
        need = addr + struct.calcsize(fmt)
        if need > len(self.mem):
            self.mem.extend(bytes(need - len(self.mem)))
        struct.pack_into(fmt, self.mem, addr, *vals)

    def desc(self, i, addr, length, flags=0, nxt=0, table=DESC):
        self.put(table + 16 * i, "<QIHH", addr, length, flags, nxt)

    def push(self, head):
        self.put(AVAIL + 4 + 2 * (self.avail_idx % self.size), "<H", head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.put(AVAIL + 2, "<H", self.avail_idx)

    def bytes(self):
        hdr = struct.pack("<BBHHHQQQII", self.cfg, self.feat, 0, self.next_idx,
                          self.next_idx, DESC, AVAIL, USED, self.rw_offset, self.actions)
        assert len(hdr) == 40
        return hdr + bytes(self.mem)


def seeds():
    g = Guest()
    g.desc(0, DATA, 16, NEXT, 1)
    g.desc(1, DATA + 0x40, 32, WRITE)
    g.push(0)
    yield "simple", g

    g = Guest()
    g.desc(3, DATA, 5, NEXT, 6)
    g.desc(6, DATA + 0x10, 7, NEXT, 1)
    g.desc(1, DATA + 0x20, 9, NEXT, 2)
    g.desc(2, DATA + 0x40, 6, WRITE | NEXT, 7)
    g.desc(7, DATA + 0x50, 11, WRITE)
    g.push(3)
    g.rw_offset = (4 << 16) | 3  # 5-byte chunks from offset 3
    yield "multi-buffer", g

    g = Guest(feat=EVENT_IDX | INDIRECT_DESC)
    g.desc(0, DATA, 12, NEXT, 2, table=TABLE)
    g.desc(1, DATA + 0x80, 1, WRITE, table=TABLE)
    g.desc(2, DATA + 0x40, 64, WRITE | NEXT, 1, table=TABLE)
    g.desc(5, TABLE, 48, INDIRECT)
    g.push(5)
    g.desc(0, DATA, 4)
    g.push(0)
    g.rw_offset = 3
    yield "indirect-event-idx", g

    g = Guest(feat=INDIRECT_DESC)
    g.desc(0, DATA, 8, NEXT, 1)
    g.desc(1, TABLE, 32, INDIRECT)
    g.desc(0, DATA + 8, 8, WRITE | NEXT, 1, table=TABLE)
    g.desc(1, DATA + 16, 8, WRITE, table=TABLE)
    g.push(0)
    yield "direct-then-indirect", g

    g = Guest(size_log2=2, next_idx=65534, feat=EVENT_IDX)
    for i in range(4):
        g.desc(i, DATA + 0x10 * i, 0x10, WRITE)
        g.push(i)
    g.put(AVAIL + 4 + 2 * 4, "<H", 65535)  # used_event
    g.actions = 0b01010101
    yield "wrap", g

    g = Guest()
    g.desc(0, DATA, 8, NEXT, 1)
    g.desc(1, DATA, 8, NEXT, 0)  # loop
    g.push(0)
    g.desc(2, 0x7FF8, 16)  # straddles the two memory regions
    g.push(2)
    g.desc(3, DATA, 8, WRITE | NEXT, 4)
    g.desc(4, DATA, 8)  # readable after writable
    g.push(3)
    yield "malformed", g


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, g in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(g.bytes())


if __name__ == "__main__":
    main()
