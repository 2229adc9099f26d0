"""lm-eval's own command with the harness as its model:

    python -m hullft.lm_eval --tasks pile_github,wikitext --limit 50 --output_path out/ selector=nn budget=8

Every flag is lm-eval's (`lm-eval run --help`: --include_path for your own task YAMLs, --log_samples,
--wandb_args, ...); every key=value whose key is the harness's (a top-level key or config group: selector,
budget, method, engine.lr, model, +key, ...) is a Hydra override for the model. lm-eval writes its results JSON
(and samples) under --output_path as usual; the harness's records of every request go to
<output_path>/records/<time> (outputs/lm_eval/<time> without --output_path), for `python -m hullft.report`.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import List, Tuple

from hullft.errors import one_line_errors

OVERRIDE = re.compile(r"^[+~]{0,2}([A-Za-z_]\w*)[\w.]*=")


def split_arguments(argv: List[str], harness_keys: set) -> Tuple[List[str], List[str]]:
    """(lm-eval's arguments, the harness's Hydra overrides)."""
    flags, overrides = [], []
    for arg in argv:
        match = OVERRIDE.match(arg)
        (overrides if match and match.group(1) in harness_keys else flags).append(arg)
    return flags, overrides


def output_path(flags: List[str]) -> str | None:
    for i, arg in enumerate(flags):
        if arg in ("--output_path", "-o") and i + 1 < len(flags):
            return flags[i + 1]
        if arg.startswith("--output_path="):
            return arg.split("=", 1)[1]
    return None


def main(argv: List[str] | None = None) -> None:
    from lm_eval.__main__ import cli_evaluate

    from hullft.compose import compose_config
    import hullft.lm_eval.model  # noqa: F401  (registers the model `hullft`)

    argv = list(sys.argv[1:] if argv is None else argv)
    with one_line_errors():
        flags, overrides = split_arguments(argv, set(compose_config().keys()))
        out = output_path(flags)
        model_args = {"overrides": overrides}
        if out:
            model_args["records"] = str(Path(out) / "records" / time.strftime("%Y%m%d-%H%M%S"))
        sys.argv = ["lm-eval", "run", "--model", "hullft", "--model_args", json.dumps(model_args), *flags]
        cli_evaluate()


if __name__ == "__main__":
    main()
