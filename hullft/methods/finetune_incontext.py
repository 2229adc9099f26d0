"""method=finetune+incontext: finetune on the selection as `finetune` does, then score the query with the same
selection in context as `incontext` does: does reading add to training?"""
from hullft.methods.incontext import InContext


class FinetuneInContext(InContext):
    name = "finetune+incontext"
    trains = True
