"""The data space: corpus -> documents -> token-bounded pool sequences -> embeddings -> search.

    corpus.py, jsonl.py   where text comes from (the offline mix, or Pile-format .jsonl[.zst] files)
    documents.py          corpus parts -> bounded, de-duplicated documents, capped per domain, split by source
    sequences.py          documents -> token-bounded sequences; which the space keeps (per-domain cutoffs)
    build.py              the cached build stages, sharded where they can be (scan, keep, chunk, embed)
    files.py              where the stages' files live; written atomically with a checksum, read back checked
    merge.py              the units streamed into token store, pool table, embeddings and index
    token_store.py        the pool's tokens and table: memory-mapped arrays
    embeddings.py         the pool's embeddings: one .npy, read in chunks or through a released map
    index.py              faiss indexes by factory string, IVF lists on disk; exact top-K on a GPU through torch
    space.py              DataSpace, loaded from a build's manifest
    __main__.py           python -m hullft.data build|<stage>|stats
"""
from hullft.data.space import DataSpace, load_data_space

__all__ = ["DataSpace", "load_data_space"]
