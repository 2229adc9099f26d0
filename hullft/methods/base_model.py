"""method=none: the base model, scored on the same clock as every other method (the front's anchor at n = 0).

No retrieval, no selection (the record's selector is `none`), no training."""
from hullft.methods import Evaluation, Method
from hullft.methods.dynamic_eval import selection_free_problems


class BaseModel(Method):
    name = "none"
    retrieves = False
    trains = False

    def config_problems(self, cfg, context_length: int) -> list:
        return selection_free_problems(self.name, cfg)

    def score(self, run, selection) -> Evaluation:
        return Evaluation(run.score())
