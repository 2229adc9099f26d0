"""What determines a set of experts: `method.experts.*` (conf/method/merge.yaml), checked where it is built."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from hullft.cache import content_hash

# Bump when the experts' files change meaning, so that experts of an older layout are never taken for current ones.
LAYOUT = 1


@dataclass(frozen=True)
class ExpertSettings:
    clusters: int = 8         # k-means clusters of the pool = experts
    steps: int = 64           # optimizer steps per expert, one per sequence of a seeded sample of its cluster
    rank: int = 8             # LoRA rank
    alpha: int = 16           # LoRA alpha (the merge scales an expert by alpha / rank, as PEFT and ttmerge do)
    lr: float = 1e-4          # the engine's optimizer and settings otherwise
    seed: int = 0             # k-means, the samples and LoRA's initialisation

    def __post_init__(self):
        for name, low in (("clusters", 1), ("steps", 1), ("rank", 1), ("alpha", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"method.experts.{name}={value}: must be an integer >= {low}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not self.lr > 0:
            raise ValueError(f"method.experts.lr={self.lr}: must be a number > 0")

    def key(self, *depends_on) -> str:
        """The experts' cache key: these settings and what they are trained from (data space, model, precision,
        engine)."""
        return content_hash(LAYOUT, asdict(self), *depends_on)
