"""A local lm-eval task over documents of your own: a jsonl and a YAML that `--include_path` reads.

    write_rolling_task(Path("my_tasks"), "mydocs", texts)
    python -m hullft.lm_eval --tasks mydocs --include_path my_tasks --output_path out/ selector=nn budget=8

The task is `loglikelihood_rolling` with lm-eval's bits_per_byte, as its Pile and WikiText tasks are. From the
command line, the held-out query documents of a configuration (those `run.py` scores with the same overrides):

    python -m hullft.lm_eval.tasks --out my_tasks --name heldout queries_per_domain=2
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, List

ROLLING = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""


def write_task(folder: Path, name: str, template: str, rows: Iterable[dict]) -> Path:
    """folder/<name>.jsonl holding `rows`, and folder/<name>.yaml: `template` with its name and data path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(template.format(name=name, data=data.resolve()))
    return folder


def write_rolling_task(folder: Path, name: str, texts: Iterable[str]) -> Path:
    return write_task(folder, name, ROLLING, ({"text": t} for t in texts))


def held_out_documents(overrides: List[str]):
    """The query documents `run.py` scores under these overrides (doc_id, domain, text)."""
    from hullft.compose import compose_config
    from hullft.data import load_data_space
    from hullft.embedder import Embedder
    from hullft.models import load_model
    from hullft.runner import pick_queries

    cfg = compose_config(overrides)
    loaded = load_model(cfg.model)
    return pick_queries(load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, Embedder(cfg.embedder)), cfg)


def main(argv=None) -> None:
    from hullft.errors import one_line_errors

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tasks", help="the folder to give lm-eval's --include_path")
    ap.add_argument("--name", default="heldout", help="the task's name (--tasks)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = ap.parse_args(argv)
    with one_line_errors():
        documents = held_out_documents(args.overrides)
        write_rolling_task(Path(args.out), args.name, documents.text)
    print(f"wrote {len(documents)} documents ({', '.join(sorted(set(documents.domain)))}) as task {args.name} in "
          f"{args.out}: python -m hullft.lm_eval --tasks {args.name} --include_path {args.out} ...")


if __name__ == "__main__":
    main()
