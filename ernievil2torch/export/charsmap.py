"""A character map in SentencePiece's ``precompiled_charsmap`` format, which the ``tokenizers`` library's
``Precompiled`` normalizer reads: one pass over a text that replaces each listed string by its own replacement.

Why this format: ``tokenizers`` has no other normalizer that maps many characters to many different strings in one
pass (``Replace`` writes one fixed string per pattern, so a table of thousands of targets would be thousands of
passes over every text). ``Precompiled`` is the normalizer of every SentencePiece model converted to
``tokenizers`` (T5, ALBERT, XLM-R), so every version of the library reads it.

Layout (SentencePiece's ``normalizer.cc``, read by the ``spm_precompiled`` crate): a little-endian ``uint32`` byte
size of the trie, the trie as little-endian ``uint32`` units (a darts-clone double array over the keys' UTF-8
bytes), then the replacements, each UTF-8 and ending in a NUL byte; a key's value is its replacement's byte offset.

A darts-clone unit: bits 0-7 the label (the byte that leads to this node), bit 8 "has a leaf" (some key ends
here; its value sits in the unit the label-0 child would use), bits 10-31 the XOR offset from this node's position
to its children's base (bit 9 scales it by 256, never needed here); a value unit is ``value | 1 << 31``, so its
label never equals a byte. A lookup walks ``pos ^= offset; pos ^= byte`` and checks the label, so two nodes may
never share a base: each base is used once.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Mapping

_LEAF = 1 << 8
_VALUE = 1 << 31
_MAX_OFFSET = 1 << 21  # offsets at or above this need the scaled form; a map this size never gets near it


def _trie(keys: List[bytes]) -> dict:
    """Byte trie of ``keys``: nested dicts, ``None`` marking the end of a key (its value's index in ``keys``)."""
    root: dict = {}
    for index, key in enumerate(keys):
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = index
    return root


def precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """The ``precompiled_charsmap`` bytes of ``mapping`` (key -> replacement).

    Keys must be non-empty and hold no NUL; a replacement may be any string without NUL. Lookups find the key that
    is the shortest prefix of the probed text, so keys that are single characters (as here) are never shadowed.
    """
    if not mapping:
        raise ValueError("an empty character map")
    keys = list(mapping)
    for key, value in mapping.items():
        if not key or "\0" in key or "\0" in value:
            raise ValueError(f"character map entry {key!r} -> {value!r}: keys must be non-empty, neither may hold NUL")
    blob = bytearray()
    offsets: Dict[str, int] = {}
    for value in mapping.values():
        if value not in offsets:
            offsets[value] = len(blob)
            blob += value.encode("utf-8") + b"\0"

    units: List[int] = [0]
    used = bytearray(1)  # position 0 is the root
    used_bases = set()
    next_free = 1  # no free slot below this one

    def grow(size: int) -> None:
        if size > len(units):
            extra = size - len(units)
            units.extend([0] * extra)
            used.extend(bytes(extra))

    def free_from(position: int) -> int:
        found = used.find(0, position)
        return len(used) if found < 0 else found

    def find_base(labels: List[int]) -> int:
        """A base no node uses yet whose child slots for ``labels`` are free (first fit from the first hole)."""
        nonlocal next_free
        next_free = free_from(next_free)
        position = next_free
        while True:
            base = position ^ labels[0]
            grow(max(base | 0xFF, position) + 1)
            if base not in used_bases and all(base ^ label and not used[base ^ label] for label in labels):
                return base
            position = free_from(position + 1)

    queue = [(0, _trie([key.encode("utf-8") for key in keys]))]
    while queue:
        position, node = queue.pop()
        labels = sorted(0 if byte is None else byte for byte in node)
        base = find_base(labels)
        used_bases.add(base)
        offset = position ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError("character map too large for an unscaled darts-clone offset")
        units[position] |= offset << 10
        for byte, child in node.items():
            if byte is None:
                units[position] |= _LEAF
                units[base] = offsets[mapping[keys[child]]] | _VALUE
                used[base] = 1
            else:
                units[base ^ byte] = byte
                used[base ^ byte] = 1
                queue.append((base ^ byte, child))
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)
