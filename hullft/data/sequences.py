"""Documents -> token-bounded pool sequences, and which of them the space keeps, decided without a global sort.

Every sequence has a seeded order, a hash of its key (doc_id, start). Each domain keeps its
`max_pool_per_domain` first sequences in that order (ties by doc_id, then start): a domain's *cutoff*, the key of
its last kept sequence, says it all. The cutoff is found from per-unit summaries in two streaming passes, so the
plan's memory is flat in the corpus size: a histogram of the orders per domain (ORDER_BUCKETS counts), then the
sequences of the one bucket where the count crosses the cap (about total/ORDER_BUCKETS of them). A unit then
keeps its sequences at or before their domain's cutoff, on its own.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd

from hullft.config import DataConfig
from hullft.data.documents import unit_hash

ORDER_BUCKETS = 1 << 16
Cutoff = Optional[Tuple[float, str, int]]  # (order, doc_id, start) of a domain's last kept sequence; None: all


def token_ids(tokenizer, texts: List[str]) -> List[List[int]]:
    """Each text's token ids without special tokens: tokenizer(texts).input_ids. A fast tokenizer's Rust backend
    is called directly and skips the character offsets: 1.2x faster on the default pool's 31 MB. Not where the
    backend pads or truncates by itself (as a saved BERT tokenizer may): there transformers turns that off."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.padding is None and backend.truncation is None:
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False).input_ids


def texts_of(tokenizer, sequences: List[List[int]]) -> List[str]:
    """tokenizer.batch_decode(sequences). Where that is the Rust backend's decode, one sequence at a time from
    Python (a fast tokenizer that cleans up no spaces), the backend decodes them all at once: 2.4x faster."""
    if getattr(tokenizer, "is_fast", False) and not tokenizer.clean_up_tokenization_spaces:
        return tokenizer.backend_tokenizer.decode_batch(sequences, skip_special_tokens=False)
    return tokenizer.batch_decode(sequences)


def chunk(docs: pd.DataFrame, tokenizer, cfg: DataConfig) -> pd.DataFrame:
    """Token-bounded sequences of the documents (in their order, then by start), each with its seeded order."""
    rows = []
    encoded = token_ids(tokenizer, list(docs.text))
    max_length, min_length, seed = int(cfg.max_length), int(cfg.min_length), cfg.seed  # a DictConfig read is slow
    for (domain, doc_id), ids in zip(zip(docs.domain, docs.doc_id), encoded):
        for start in range(0, len(ids), max_length):
            piece = ids[start:start + max_length]
            if len(piece) >= min_length:
                rows.append((domain, doc_id, start, unit_hash(seed, "seq", doc_id, start), piece))
    return pd.DataFrame(rows, columns=["domain", "doc_id", "start", "order", "tokens"])


def _buckets(order: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(order, np.float64) * ORDER_BUCKETS).astype(np.int64), ORDER_BUCKETS - 1)


def cutoffs(summaries: Callable[[List[str]], Iterable[pd.DataFrame]], cap: int) -> Dict[str, Cutoff]:
    """Each domain's cutoff, from `summaries(columns)`: every unit's sequences (those columns of them), unit by
    unit, read again for each pass."""
    counts: Dict[str, np.ndarray] = {}
    for seqs in summaries(["domain", "order"]):
        for domain, order in seqs.groupby("domain", observed=True).order:
            hist = counts.setdefault(str(domain), np.zeros(ORDER_BUCKETS, np.int64))
            hist += np.bincount(_buckets(order), minlength=ORDER_BUCKETS)
    out: Dict[str, Cutoff] = {domain: None for domain, hist in counts.items() if hist.sum() <= cap}
    crossing = {}  # domain -> (bucket where the cap is crossed, how many of that bucket are kept)
    for domain, hist in counts.items():
        if domain not in out:
            below = np.cumsum(hist)
            bucket = int(np.searchsorted(below, cap))  # the first bucket whose running count reaches cap
            crossing[domain] = (bucket, cap - int(below[bucket - 1] if bucket else 0))
    if not crossing:
        return out
    found: Dict[str, List[pd.DataFrame]] = {domain: [] for domain in crossing}
    for seqs in summaries(["domain", "order", "doc_id", "start"]):
        seqs = seqs.assign(bucket=_buckets(seqs.order), domain=seqs.domain.astype(str))
        for domain, (bucket, _) in crossing.items():
            found[domain].append(seqs[(seqs.domain == domain) & (seqs.bucket == bucket)])
    for domain, (_, need) in crossing.items():
        ranked = pd.concat(found[domain]).sort_values(["order", "doc_id", "start"]).iloc[need - 1]
        out[domain] = (float(ranked.order), str(ranked.doc_id), int(ranked.start))
    return out


def kept(seqs: pd.DataFrame, cuts: Dict[str, Cutoff]) -> np.ndarray:
    """Which of these sequences are at or before their domain's cutoff."""
    keep = np.zeros(len(seqs), bool)
    for domain, rows in seqs.groupby(seqs.domain.astype(str), sort=False).indices.items():
        cut = cuts.get(domain, (-1.0, "", 0))  # a domain the plan has not seen keeps nothing
        if cut is None:
            keep[rows] = True
            continue
        order, doc_id, start = (seqs[c].to_numpy()[rows] for c in ("order", "doc_id", "start"))
        keep[rows] = (order < cut[0]) | ((order == cut[0]) & ((doc_id < cut[1]) | ((doc_id == cut[1]) &
                                                                                    (start <= cut[2]))))
    return keep
