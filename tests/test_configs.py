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
