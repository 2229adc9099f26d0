"""Base-model BPB per (model, text, protocol), cached on disk so a sweep scores each query once."""
from __future__ import annotations

import json

from hullft.cache import bytes_hash, cache_root, content_hash, write_json_atomic
from hullft.config import EvalConfig
from hullft.models import LoadedModel
from hullft.scoring import score_text


class BaseBPBCache:
    def __init__(self, loaded: LoadedModel, cfg: EvalConfig):
        self.loaded, self.cfg = loaded, cfg
        key = content_hash(loaded.fingerprint, str(cfg.protocol), cfg.window)
        self.path = cache_root() / "base_bpb" / f"{key}.json"
        try:
            self.values = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (json.JSONDecodeError, OSError):
            self.values = {}

    def get(self, text: str) -> float:
        key = bytes_hash(text.encode())
        if key not in self.values:
            self.values[key] = score_text(self.loaded, text, self.cfg).bpb
            write_json_atomic(self.path, self.values)
        return self.values[key]
