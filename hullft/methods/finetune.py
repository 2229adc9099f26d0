"""method=finetune: one optimizer step per selected element, then the query is scored (the harness's default)."""
from hullft.methods import Evaluation


class Finetune:
    name = "finetune"
    retrieves = True
    trains = True

    def config_problems(self, cfg, context_length: int) -> list:
        return []

    def score(self, run, selection) -> Evaluation:
        return Evaluation(run.score())
