"""No leakage: a document being evaluated is never trained on, nor read in context.

The rule: a retrieved pool sequence overlaps the document when the two share a run of at least n consecutive
tokens, or when the sequence is shorter than that and occurs whole in the document; n = max(32, 128 characters'
worth of the document's tokens), so about 128 characters whatever the tokenizer (32 tokens of a BPE vocabulary,
128 of a byte-level one). Overlapping
sequences are dropped before selection (the record counts them: `leaked`). Pool sequences are the corpus's
documents cut into token-bounded chunks, so a document planted in the pool shares every chunk's interior with
itself whatever the chunk boundaries.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

OVERLAP = 32           # tokens, at least
OVERLAP_CHARS = 128    # characters, about


def _grams(tokens: Sequence[int], size: int) -> set:
    return {tuple(tokens[i:i + size]) for i in range(len(tokens) - size + 1)}


def run_length(tokens: int, characters: int) -> int:
    """n for a document of this many tokens and characters."""
    return max(OVERLAP, round(OVERLAP_CHARS * tokens / max(1, characters)))


def overlaps(document: Sequence[int], sequence: Sequence[int], size: int = OVERLAP,
             document_grams: set | None = None) -> bool:
    if len(sequence) < size:
        return len(sequence) > 0 and _occurs_in(document, sequence)
    grams = document_grams if document_grams is not None else _grams(document, size)
    return any(tuple(sequence[i:i + size]) in grams for i in range(len(sequence) - size + 1))


def _occurs_in(document: Sequence[int], sequence: Sequence[int]) -> bool:
    """Whether `sequence` is a contiguous run of `document` (a byte match at a token boundary)."""
    text, piece = np.asarray(document, np.int64).tobytes(), np.asarray(sequence, np.int64).tobytes()
    start = text.find(piece)
    while start != -1:
        if start % 8 == 0:
            return True
        start = text.find(piece, start + 1)
    return False


def screen_for(documents: Sequence[Sequence[int]], size: int, tokens_of: Callable[[int], Sequence[int]]) -> Callable:
    """rows -> the mask of pool rows that overlap none of `documents` (a prompt with each of its continuations,
    or a whole document) by a run of `size` tokens; tokens_of(row): a pool row's tokens."""
    grams = [_grams(document, size) for document in documents]

    def keep(rows: np.ndarray) -> np.ndarray:
        return np.array([not any(overlaps(d, tokens_of(int(r)), size, g) for d, g in zip(documents, grams))
                         for r in rows], dtype=bool)
    return keep
