"""method=finetune: one optimizer step per selected element, then the query is scored (the harness's default)."""
from hullft.methods import Evaluation, Method


class Finetune(Method):
    name = "finetune"
    retrieves = True
    trains = True

    def score(self, run, selection) -> Evaluation:
        return Evaluation(run.score())
