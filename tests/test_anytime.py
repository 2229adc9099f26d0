"""Anytime curves: the records a checkpointed pass writes equal standalone runs at each n."""
import json

import numpy as np
import pandas as pd
import pytest

from hullft.compose import compose_config
from hullft.records import RecordStore
from hullft.runner import run_job

CHECK = ["n", "opt_steps", "fwd_bwd", "distinct", "budget", "train_tokens", "query_tokens", "diverged"]


@pytest.mark.parametrize("selector, extra", [("sift_exact", ["engine.order=as_selected", "engine.lr=3e-3"]),
                                             ("nn", ["engine.lr=3e-3"]),
                                             ("hullft", ["engine.lr=3e-3"])])
def test_checkpoint_records_equal_standalone_runs(tmp_path, tiny_overrides, selector, extra):
    base = [*tiny_overrides, "queries_per_domain=1", "k=20", f"selector={selector}", *extra]
    curve = run_job(compose_config([*base, "budget=6", "checkpoints=[1,2,4]"]), tmp_path / "curve")
    assert sorted(curve.n.unique()) == [1, 2, 4, 6] and len(curve) == 4 * curve.query_id.nunique()
    assert (curve.groupby("query_id").final.sum() == 1).all() and (curve[curve.final].n == 6).all()
    for n in (1, 2, 4, 6):
        alone = run_job(compose_config([*base, f"budget={n}"]), tmp_path / f"n{n}").set_index("query_id")
        mine = curve[curve.n == n].set_index("query_id").loc[alone.index]
        np.testing.assert_allclose(mine.bpb, alone.bpb, rtol=1e-6)
        np.testing.assert_allclose(mine.sigma, alone.sigma, rtol=1e-9)
        pd.testing.assert_frame_equal(mine[CHECK], alone[CHECK], check_dtype=False)
    if selector != "hullft":  # one pass: the curve's optimizer steps are the budget's, not their sum
        assert curve.groupby("query_id").opt_steps.max().sum() == 6 * curve.query_id.nunique()


def test_checkpoint_settings_are_checked():
    from hullft.validate import config_problems

    assert any("checkpoints=[0, 4]" in p for p in config_problems(compose_config(["budget=4", "checkpoints=[0,4]"])))
    assert any("cannot be combined" in p for p in config_problems(compose_config(["checkpoints=[1]", "alpha=1"])))


def test_a_query_killed_between_its_checkpoint_records_is_redone(tmp_path):
    rows = [{"query_id": "a", "n": 1, "final": False}, {"query_id": "a", "n": 2, "final": True},
            {"query_id": "b", "n": 1, "final": False}]
    for r in rows:
        r.update(config_hash="h", data_key="d")
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"query_id": "b", "n"')
    store = RecordStore(tmp_path, "h")
    store.accept_data("d")
    assert store.done == {"a"} and len(store.rows) == 2
    store.append_query([{"query_id": "b", "n": n, "final": n == 2, "config_hash": "h", "data_key": "d"}
                        for n in (1, 2)])
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert [json.loads(x)["query_id"] for x in lines] == ["a", "a", "b", "b"]  # b's records once, no torn line


class PrefixBreakingNN:
    """Declares greedy, like nn, but at n=2 its second pick is the third nearest: the prefix breaks there."""
    name = "prefix_breaking_nn"
    greedy = True

    def select(self, query, candidates, n):
        from hullft.selection.multiset import Multiset

        order = np.argsort(-(candidates @ query), kind="stable")
        picks = [order[0], order[2]] if n == 2 else order[:n]
        return Multiset.from_picks(picks)


def _job_with_selector(monkeypatch, selector, overrides, out):
    import hullft.runner

    monkeypatch.setattr(hullft.runner, "build_selector", lambda cfg: selector)
    return run_job(compose_config(overrides), out)


@pytest.mark.parametrize("make_selector, extra", [
    (PrefixBreakingNN, []),
    # activeft's SIFT over candidates holding exact and near duplicates (1e-7 apart): its picks at ties follow a
    # shuffle (baselines/sift.py); every checkpoint record must be what a standalone run at that n records
    (lambda: __import__("baselines.sift", fromlist=["SIFT"]).SIFT(llambda=0.2), ["engine.order=as_selected"]),
])
def test_a_greedy_selector_whose_prefix_breaks_gets_its_checkpoint_run_alone(tmp_path, tiny_overrides, monkeypatch,
                                                                             make_selector, extra):
    from hullft.data.space import DataSpace

    if make_selector is not PrefixBreakingNN:
        candidates = DataSpace.candidates

        def with_duplicates(self, rows):
            c = candidates(self, rows).copy()
            c[1::2] = c[0::2][:len(c[1::2])]          # every other row a copy of the one before ...
            c[3::4] += 1e-7 * np.sign(c[3::4])        # ... a quarter of them 1e-7 away
            return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)

        monkeypatch.setattr(DataSpace, "candidates", with_duplicates)
    base = [*tiny_overrides, "queries_per_domain=1", "k=20", "engine.lr=3e-3", *extra]
    curve = _job_with_selector(monkeypatch, make_selector(), [*base, "budget=4", "checkpoints=[1,2,3]"],
                               tmp_path / "curve")
    assert sorted(curve.n.unique()) == [1, 2, 3, 4] and (curve.groupby("query_id").final.sum() == 1).all()
    if make_selector is PrefixBreakingNN:  # n=2 was trained on its own; 1 and 3 were scored on the pass to 4
        assert curve.groupby("n").own_pass.all().to_dict() == {1: False, 2: True, 3: False, 4: True}
        assert (curve.groupby("query_id").opt_steps.sum() == 1 + 2 + 3 + 4).all()
    for n in (1, 2, 3, 4):
        alone = _job_with_selector(monkeypatch, make_selector(), [*base, f"budget={n}"], tmp_path / f"n{n}")
        alone = alone.set_index("query_id")
        mine = curve[curve.n == n].set_index("query_id").loc[alone.index]
        np.testing.assert_allclose(mine.bpb, alone.bpb, rtol=1e-6)
        pd.testing.assert_frame_equal(mine[CHECK], alone[CHECK], check_dtype=False)


class RepeatingGreedy:
    """A greedy selector whose picks repeat rows out of order: grouped steps are then not the picks' prefix."""
    name = "repeating_greedy"
    greedy = True
    PICKS = [0, 1, 0, 2, 0, 1, 2, 0]

    def select(self, query, candidates, n):
        from hullft.selection.multiset import Multiset

        return Multiset.from_picks(self.PICKS[:n])


@pytest.mark.parametrize("method, refused", [("finetune", True), ("incontext", False)])
def test_step_order_is_checked_only_for_methods_that_train(tmp_path, tiny_overrides, monkeypatch, method, refused):
    """In-context reading trains nothing: its checkpoints never depend on engine.order (a false refusal before)."""
    from hullft.errors import UserError

    args = [*tiny_overrides, "queries_per_domain=1", "k=20", "engine.order=grouped", "budget=8",
            "checkpoints=[2,4]", f"method={method}"]
    if method == "incontext":  # 8 sequences of up to 31 tokens and their separators fill the 256 tokens
        args += ["method.context_tokens=256", "data.max_length=31"]
    if refused:
        with pytest.raises(UserError, match="use engine.order=as_selected"):
            _job_with_selector(monkeypatch, RepeatingGreedy(), args, tmp_path / method)
    else:
        records = _job_with_selector(monkeypatch, RepeatingGreedy(), args, tmp_path / method)
        assert sorted(records.n.unique()) == [2, 4, 8]
