"""The base model's score per (model, text, eval config), cached on disk so a sweep scores each query once."""
from __future__ import annotations

import json

from hullft.cache import bytes_hash, cache_root, content_hash, write_json_atomic
from hullft.config import EvalConfig
from hullft.models import LoadedModel
from hullft.scoring.bpb import Score, score_text

# Bump when scoring changes what it computes, so no cached base score of an older definition is reused.
SCORING_VERSION = 2


class BaseScoreCache:
    def __init__(self, loaded: LoadedModel, cfg: EvalConfig, forward=None):
        self.loaded, self.cfg, self.forward = loaded, cfg, forward
        fields = {k: str(v) for k, v in cfg.items() if k != "name"}
        key = content_hash(loaded.fingerprint, str(loaded.dtype), fields, SCORING_VERSION,
                           type(forward).__name__ if forward is not None else "eager")
        self.path = cache_root() / "base_score" / f"{key}.json"
        try:
            self.values = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (json.JSONDecodeError, OSError):
            self.values = {}

    def get(self, text: str) -> Score:
        key = bytes_hash(text.encode())
        if key not in self.values:
            score = score_text(self.loaded, text, self.cfg, self.forward)
            self.values[key] = [score.nll_nats, score.tokens, score.bytes]
            write_json_atomic(self.path, self.values)
        nll, tokens, n_bytes = self.values[key]
        return Score(nll, tokens, n_bytes, 0.0)
