"""Our rolling BPB against lm-evaluation-harness's HFLM.loglikelihood_rolling, on real query documents.

    python -m benchmarks.check_lm_eval [--docs-per-domain 2] [--window 1024] [hydra overrides...]

Same model object, same window (HFLM's max_length), same prefix token (lm-eval's rule: BOS, else EOS,
our `eval.prefix_token=bos`), and HFLM told not to add special tokens, as we tokenize. Prints each
document's log-likelihood from both and the largest relative difference.
"""
from __future__ import annotations

import argparse

import pandas as pd

from hullft.compose import compose_config
from hullft.config import PrefixToken
from hullft.data import load_data_space
from hullft.data.documents import unit_hash
from hullft.embedder import Embedder
from hullft.models import load_model
from hullft.scoring.bpb import prefix_token_id, score_text


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs-per-domain", type=int, default=2)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    cfg = compose_config([*args.overrides, f"eval.window={args.window}", "eval.prefix_token=bos"])
    loaded = load_model(cfg.model)
    space = load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, Embedder(cfg.embedder))
    docs = space.queries.assign(order=lambda q: [unit_hash(0, "check", d) for d in q.doc_id])
    docs = space.with_text(docs.sort_values(["domain", "order"]).groupby("domain").head(args.docs_per_domain))
    prefix = prefix_token_id(loaded.tokenizer, PrefixToken.bos)
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, max_length=args.window, batch_size=1,
              device=str(loaded.device), prefix_token_id=prefix, add_bos_token=False)
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(docs.text)]
    theirs = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    rows = []
    for doc, ll in zip(docs.itertuples(), theirs):
        score = score_text(loaded, doc.text, cfg.eval)
        rows.append({"domain": doc.domain, "tokens": score.tokens, "windows": -(-score.tokens // args.window),
                     "ours_nll": score.nll_nats, "lm_eval_nll": -ll, "rel_diff": abs(score.nll_nats + ll) / -ll,
                     "bpb": score.bpb})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    worst = float(df.rel_diff.max())
    print(f"\n{len(df)} documents ({int((df.windows > 1).sum())} of several windows), model {loaded.name}, "
          f"window {args.window}, prefix token {prefix}: largest relative difference {worst:.2e} (target <= 1e-6)")
    return worst


if __name__ == "__main__":
    main()
