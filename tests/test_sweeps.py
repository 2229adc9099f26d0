"""Every sweep in sweeps/, run on the tiny model, reports one point per swept value, each over every query."""
import itertools
from pathlib import Path

import pytest
import yaml

from hullft.report.loading import load_records
from hullft.report.tables import summarize
from tests.test_runner import REPO, run

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
# the model sweep's hub models are not here: two tiny models of different depth stand in for them; the tiny pool
# holds 450 sequences, fewer than k=1000
ON_THE_TINY_MODEL = {"model": ("model.n_layer", "1,2"), "k": ("k", "20,40,80")}


def swept(path: Path) -> dict:
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    return dict(ON_THE_TINY_MODEL.get(key, (key, str(values))) for key, values in params.items())


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_a_sweep_reports_one_point_per_swept_value(sweep, tmp_path, tiny_overrides):
    params = swept(sweep)
    run(["-m", f"+sweeps={sweep.stem}", *tiny_overrides, "queries_per_domain=1", "k=30", "engine.lr=3e-3",
         f"tag={sweep.stem}", *[f"{key}={values}" for key, values in params.items()]], tmp_path)
    records = load_records([tmp_path / "multirun" / sweep.stem])
    points = summarize(records)
    combinations = list(itertools.product(*[values.split(",") for values in params.values()]))
    assert len(points) == len(combinations), points[["selector", "label", "setting", "queries"]]
    assert (points.queries == records.query_id.nunique()).all(), points[["selector", "label", "setting", "queries"]]
