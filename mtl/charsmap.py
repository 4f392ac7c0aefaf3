"""A SentencePiece `precompiled_charsmap` built from a character map, for `tokenizers`'
`normalizers.Precompiled`.

The format (SentencePiece's normalizer; read by the `spm_precompiled` crate): a little-endian
u32 with the trie's size in bytes, the trie (a darts-clone double array of u32 units), then the
replacement strings, each UTF-8 and ended by a NUL byte. The trie maps a key's UTF-8 bytes to the
offset of its replacement. A unit is `label | has_leaf << 8 | offset << 10` (offset < 2**21);
from a node at position p with offset o, the child labelled c sits at p ^ o ^ c and its value
(`1 << 31 | value`) at p ^ o when the node ends a key. Each node gets a distinct p ^ o, so a byte
that no key continues with never finds a unit carrying its label.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

LEAF = 1 << 31


def precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """The charsmap that replaces each key of `mapping` by its value (an empty value deletes)."""
    if not mapping or any(not key or "\0" in key + value for key, value in mapping.items()):
        raise ValueError("charsmap keys must be non-empty, and no key or value may hold NUL")
    strings = bytearray()
    values: dict[bytes, int] = {}
    for key, value in sorted(mapping.items()):
        values[key.encode()] = len(strings)
        strings += value.encode() + b"\0"
    units = _double_array(values)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def _double_array(values: dict[bytes, int]) -> list[int]:
    """The darts-clone units of a trie holding `values` (key bytes -> value)."""
    children: dict[bytes, set[int]] = {b"": set()}  # node (a key prefix) -> its child labels
    for key in values:
        for i in range(len(key)):
            children.setdefault(key[:i], set()).add(key[i])
            children.setdefault(key[: i + 1], set())
    units = [0] * 256
    taken = bytearray(256)  # positions holding a unit
    taken[0] = 1  # the root
    bases: set[int] = set()
    position = {b"": 0}
    for node in sorted(children, key=lambda k: (len(k), k)):  # parents before their children
        labels = sorted(children[node]) + ([0] if node in values else [])
        base = _free_base(labels, taken, bases)
        bases.add(base)
        if len(taken) < (base | 255) + 1:  # the whole block: every p ^ o ^ c stays in range
            grow = (base | 255) + 1 - len(taken)
            taken += bytes(grow)
            units += [0] * grow
        p = position[node]
        offset = p ^ base
        if offset >= 1 << 21:
            raise ValueError("charsmap too large for this builder (offsets must stay < 2**21)")
        units[p] |= (offset << 10) | ((node in values) << 8)
        for c in labels:
            taken[base ^ c] = 1
            units[base ^ c] = c
            position[node + bytes([c])] = base ^ c
        if node in values:
            units[base] = LEAF | values[node]
    return units


def _free_base(labels: list[int], taken: bytearray, bases: set[int]) -> int:
    """The lowest base not used by another node whose positions base ^ c are all free."""
    free = taken.find(0)
    while True:
        if free < 0:
            free = len(taken)
        base = free ^ labels[0]
        if base not in bases and all(base ^ c >= len(taken) or not taken[base ^ c] for c in labels):
            return base
        free = taken.find(0, free + 1) if free < len(taken) else free + 1
