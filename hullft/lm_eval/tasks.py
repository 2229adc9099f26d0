"""A local lm-eval task over documents of your own: a jsonl and a YAML that `--include_path` reads.

    write_rolling_task(Path("my_tasks"), "mydocs", texts)
    python -m hullft.lm_eval --tasks mydocs --include_path my_tasks --output_path out/ selector=nn budget=8

The task is `loglikelihood_rolling` with lm-eval's bits_per_byte, as its Pile and WikiText tasks are.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

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
