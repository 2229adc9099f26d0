"""Which configuration each record measured, and the label that tells it apart from the others in one report.

A job writes its resolved config beside its records (config.yaml). Two records belong to one configuration when
their configs agree in everything but what names nothing: shards, workers, the logger and the tag (so the shards,
workers and resumed runs of one configuration merge), and, for a fixed budget, `budget`/`checkpoints`, which only
say at which n a pass is scored, shown as the record's setting (an n=2 record of an anytime pass to 8 measures what
a run at budget 2 measures; tested in tests/test_anytime.py). An adaptive budget is another measurement: `alpha`
and its cap `budget` are in the configuration (two alphas never merge, whatever n their queries chose), shown by
the setting (`alpha=0.5 n<=20`) rather than the label.

What changes a record's numbers but is known only once it runs (`RECORD_KEYS`: whether a merge ran through the
fused kernel or torch's addmm) is read from the records and is part of the configuration too: records of one
job that took both paths form two configurations, labelled apart (`merge_path=torch`) where the report holds both.

Where the configurations given to one report differ in anything beyond method, selector and n, each one's label
names what differs, e.g. `context_tokens=256`, `engine.lr=1e-4`, `model=gpt2`. A method's or selector's own keys
(`method.*`, `selector.*`) count only between configurations of the same method and selector: another selector
has other keys by nature. Records without a config.yaml (given by file name) are their config_hash's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pandas as pd
import yaml

from hullft.cache import content_hash

NAMES_NOTHING = ("shard", "num_shards", "worker", "tag", "budget", "checkpoints")
NAMES_NOTHING_PREFIXES = ("logger.",)
ADAPTIVE = ("alpha", "budget")  # in the configuration where alpha is set; shown by the setting, not the label
OWN_KEYS = ("method.", "selector.")
RECORD_KEYS = {"merge_path": "method.merge_path"}  # a record column -> its key in the configuration


def flat(tree, prefix: str = "") -> Dict[str, object]:
    """{"engine.lr": 5e-5, ...} from a nested config (lists kept as values)."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}."))
    return out


def identity(config: Dict[str, object]) -> Dict[str, object]:
    adaptive = config.get("alpha") is not None
    return {k: v for k, v in config.items()
            if (k not in NAMES_NOTHING or (adaptive and k in ADAPTIVE)) and not k.startswith(NAMES_NOTHING_PREFIXES)}


def config_id(config: Dict) -> str:
    """The configuration a resolved config (nested, as in config.yaml) measures: what its records merge under."""
    return content_hash(identity(flat(config)))


def read_config(records_file: Path) -> Dict[str, object] | None:
    path = Path(records_file).parent / "config.yaml"
    if not path.exists():
        return None
    try:
        return identity(flat(yaml.safe_load(path.read_text()) or {}))
    except yaml.YAMLError:
        return None


def _shown(key: str, value) -> str:
    name = key.split(".", 1)[1] if key.startswith(OWN_KEYS) else key
    if name.endswith(".name"):  # a group's option: model=gpt2
        name = name[:-len(".name")]
    return f"{name}={value}"


def labels(configs: Dict[str, Dict[str, object]], arms: Dict[str, tuple]) -> Dict[str, str]:
    """config_id -> label naming the keys that differ between the configurations (see the module's doc).
    `arms` gives each config_id's (method, selector)."""
    keys = sorted({k for c in configs.values() for k in c} - set(ADAPTIVE))
    differing: List[str] = []
    for key in keys:
        if key.startswith(OWN_KEYS):
            groups: Dict[tuple, set] = {}
            for cid, config in configs.items():
                groups.setdefault(arms[cid], set()).add(repr(config.get(key)))
            if any(len(values) > 1 for values in groups.values()):
                differing.append(key)
        elif len({repr(c.get(key)) for c in configs.values()}) > 1:
            differing.append(key)
    return {cid: " ".join(_shown(k, config[k]) for k in differing if k in config) for cid, config in configs.items()}


def with_configurations(frames: List[pd.DataFrame], files: List[Path]) -> pd.DataFrame:
    """The records of every file, with `config_id` (one per configuration) and `label` columns."""
    configs, tagged = {}, []
    for df, f in zip(frames, files):
        config = read_config(f)
        if config is None or df.empty:
            cids = df["config_hash"].astype(str) if "config_hash" in df else pd.Series("", index=df.index)
            tagged.append(df.assign(config_id=cids))
            continue
        keys = [k for k in RECORD_KEYS if k in df and df[k].notna().any()]
        for values, part in (df.groupby(keys, dropna=False) if keys else [((), df)]):
            values = values if isinstance(values, tuple) else (values,)
            measured = {**config, **{RECORD_KEYS[k]: v for k, v in zip(keys, values) if isinstance(v, str) and v}}
            cid = content_hash(measured)
            configs[cid] = measured
            tagged.append(part.assign(config_id=cid))
    records = pd.concat(tagged, ignore_index=True)
    arms = {}
    for cid in configs:
        row = records[records.config_id == cid].iloc[0]
        arms[cid] = (row.get("method", "finetune"), row["selector"])
    names = labels(configs, arms)
    return records.assign(label=records.config_id.map(names).fillna(""))
