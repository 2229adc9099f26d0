"""Every named sweep and experiment composes against the schema and sweeps what it says."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from hullft.compose import compose_config
from hullft.validate import config_problems

REPO = Path(__file__).resolve().parent.parent
NAMED = [("sweeps", p.stem) for p in sorted((REPO / "sweeps").glob("*.yaml"))] + \
        [("experiments", p.stem) for p in sorted((REPO / "experiments").glob("*.yaml"))]


@pytest.mark.parametrize("group,name", NAMED)
def test_named_config_composes_and_sweeps_something(group, name):
    compose_config()  # registers the schema and sets HULLFT_ROOT for the search path
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+{group}={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params, f"{group}/{name}.yaml sweeps nothing"
    assert any("," in str(values) for values in params.values())  # at least one key takes several values
    assert config_problems(cfg) == []  # and passes the start-up checks


def test_headline_experiment_compares_the_four_selectors():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiments=headline"], return_hydra_config=True)
    assert set(cfg.hydra.sweeper.params.selector.split(",")) == {"hullft", "sift", "nn", "us"}
    assert cfg.tag == "headline"


# Keys whose value names which option a file is (its identity), not a default the schema could state.
IDENTITY = {"name", "kind", "hub_id", "gguf_package", "gguf_file", "package"}


def _schema_defaults(cls) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = getattr(f.default, "value", f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_the_schema_and_the_yaml_tree_state_the_same_defaults():
    """Each default stated once in effect: the structured config's defaults equal conf/config.yaml's top-level
    keys and, key by key, what each group's default option sets (its identity keys aside)."""
    import yaml

    from hullft.config import Config, DataConfig, EmbedderConfig, EngineConfig, EvalConfig, LoggerConfig, ModelConfig

    top = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    schema = _schema_defaults(Config)
    assert {k: top[k] for k in schema if k in top} == {k: schema[k] for k in schema if k in top}
    chosen = {k: v for d in top["defaults"] if isinstance(d, dict) for k, v in d.items()}
    for group, cls in [("model", ModelConfig), ("embedder", EmbedderConfig), ("data", DataConfig),
                       ("engine", EngineConfig), ("eval", EvalConfig), ("logger", LoggerConfig)]:
        option = yaml.safe_load((REPO / "conf" / group / f"{chosen[group]}.yaml").read_text())
        defaults = _schema_defaults(cls)
        differ = {k: (option[k], defaults[k]) for k in option if k in defaults and k not in IDENTITY
                  and option[k] != defaults[k]}
        assert not differ, f"conf/{group}/{chosen[group]}.yaml and hullft/config.py disagree: {differ}"


def test_the_large_fronts_in_context_arm_holds_its_whole_selection():
    """make methods-large reads nn's selection at the largest n SmolLM2's context holds: every sequence whole."""
    import re

    from hydra.utils import instantiate

    line = re.search(r"^LARGE_INCONTEXT = (.*)$", (REPO / "Makefile").read_text(), re.M).group(1)
    selector, *overrides = line.split()
    cfg = compose_config(["+experiments=methods_large", "method=incontext", f"selector={selector}", *overrides])
    assert config_problems(cfg) == []
    method = instantiate(cfg.method)
    assert method.config_problems(cfg, context_length=8192) == []  # SmolLM2-135M's context
    assert cfg.budget * (cfg.data.max_length + 1) <= method.context_tokens  # each with its separator, none cut
    assert max(cfg.checkpoints) < cfg.budget
