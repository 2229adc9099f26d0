"""method=incontext: in-context retrieval augmentation (In-Context RALM, Ram et al. 2023). The model is not
trained; the selected pool sequences are placed before the query in its context window.

- Distinct rows only: a repeat in the multiset adds no text the model has not read (HullFT's multiplicities
  and SIFT's repeats only order the rows).
- Order: the most relevant sequence nearest the query. Relevance is the selector's order (first-pick order
  for nn, sift, us, ...; for HullFT, its multiplicity, i.e. its weight, ties in the selector's order).
- Each sequence is followed by the prefix token (`eval.prefix_token`, <|endoftext|> by default) as a document
  separator. A job whose `budget` sequences of up to `data.max_length` tokens and their separators do not fit
  in `context_tokens` is refused at start, so that every n read means n sequences placed whole. Called directly
  with less room (a unit test, a caller of `context`), whole sequences are taken while they fit; the first that
  does not is cut to its beginning and is then the farthest from the query; the rest are dropped. The record's
  `context_tokens` is what was placed.
- Every scoring window of the query (rolling or first_window) is scored with this context before its own
  inputs; only the query's tokens are scored and the BPB is over the query's bytes, as for every method.
  The first window's own prefix token is then the context's last separator, not a second one.
"""
from __future__ import annotations

import time
from typing import List

import numpy as np

from hullft.methods import Evaluation, Method
from hullft.scoring.bpb import prefix_token_id


class InContext(Method):
    name = "incontext"
    retrieves = True
    trains = False

    def __init__(self, context_tokens: int = 2056):
        if not isinstance(context_tokens, int) or context_tokens < 0:
            raise ValueError(f"method.context_tokens={context_tokens}: must be a number of tokens >= 0")
        self.context_tokens = context_tokens

    def config_problems(self, cfg, context_length: int) -> list:
        problems = []
        if cfg.eval.window + self.context_tokens > context_length:
            problems.append(f"eval.window={cfg.eval.window} + method.context_tokens={self.context_tokens} > the "
                            f"model's context of {context_length} tokens: lower method.context_tokens or eval.window")
        piece = int(cfg.data.max_length) + 1  # a sequence and its separator
        if cfg.budget * piece > self.context_tokens:
            fits = self.context_tokens // piece
            problems.append(f"budget={cfg.budget}: {cfg.budget} sequences of up to data.max_length="
                            f"{cfg.data.max_length} tokens and their separators need {cfg.budget * piece} tokens, "
                            f"method.context_tokens={self.context_tokens} holds {fits}: lower budget to {fits} or "
                            f"raise method.context_tokens to {cfg.budget * piece} (eval.window + it within the "
                            f"model's {context_length})")
        return problems

    def context(self, run, selection) -> List[int]:
        """The selection's tokens as placed before the query (most relevant last)."""
        if selection is None:
            return []
        order = np.arange(len(selection.indices))
        if selection.picks is None:  # no pick order (HullFT): by multiplicity, i.e. weight
            order = np.argsort(-selection.counts, kind="stable")
        separator = prefix_token_id(run.loaded.tokenizer, run.cfg.eval.prefix_token)
        pieces, room = [], self.context_tokens
        for row in run.rows[selection.indices[order]]:
            if room < 2:
                break
            tokens = run.space.pool.tokens(int(row))
            piece = tokens[:room - 1] + [separator]
            pieces.append(piece)
            room -= len(piece)
            if len(piece) <= len(tokens):  # cut: nothing more fits
                break
        return [t for piece in reversed(pieces) for t in piece]

    def score(self, run, selection) -> Evaluation:
        start = time.perf_counter()
        context = self.context(run, selection)
        built = time.perf_counter() - start
        score = run.score(context)
        score.seconds += built
        return Evaluation(score, context_tokens=len(context))
