"""The data space: corpus -> documents -> token-bounded pool sequences -> embeddings -> search.

    corpus.py, jsonl.py   where text comes from (the offline mix, or a Pile-format .jsonl[.zst])
    documents.py          streamed into bounded, de-duplicated documents, split by source
    build.py              the cached build stages (units, shardable; merge)
    token_store.py        the pool's tokens: one flat memory-mapped array and a table
    embeddings.py         the pool's embeddings: one .npy, written row by row, read in chunks or memory-mapped
    index.py              faiss indexes by factory string; exact top-K on a GPU through torch
    space.py              DataSpace, loaded from a build's manifest
    __main__.py           python -m hullft.data plan|build|merge|stats
"""
from hullft.data.space import DataSpace, load_data_space

__all__ = ["DataSpace", "load_data_space"]
