"""A paired table's intervals rederived from its per-domain rows equal those computed from the records."""
import numpy as np
import pandas as pd
import pytest

from hullft.report.rederive import rederive, stand_ins
from hullft.report.tables import paired_table
from tests.test_report import synthetic_records

NEW = ["se", "df", "ci_lo", "ci_hi", "p", "queries_needed"]


def test_stand_ins_keep_the_count_mean_and_standard_error():
    values = stand_ins(7, 0.3, 0.2)
    assert len(values) == 7 and values.mean() == pytest.approx(0.3)
    assert values.std(ddof=1) / np.sqrt(7) == pytest.approx(0.2)


@pytest.mark.parametrize("lone", [0, 1, 3])
def test_rederived_intervals_equal_the_records(lone):
    df = synthetic_records()
    for i in range(lone):  # domains of a single query
        df.loc[df.query_id == f"law-{i}", "domain"] = f"alone{i}"
    full = paired_table(df)
    # an old table: its ALL rows' se is not read; a domain's se is the plain one, which one stratum's equals
    old = full[["domain", "setting", "a", "b", "queries", "diff_pct", "a_wins"]].assign(
        se=full.se.where(full.domain != "ALL"))
    again = rederive(old)
    pd.testing.assert_frame_equal(again[NEW], full[NEW], rtol=1e-9)
    assert again.resolved.tolist() == full.resolved.tolist() and again.holm.tolist() == full.holm.tolist()


def test_rederived_standard_errors_equal_the_records():
    from hullft.report.rederive import rederive_se
    from hullft.report.tables import domain_table

    table = domain_table(synthetic_records())
    old = table.assign(se=table.se.where(table.domain != "ALL"))
    np.testing.assert_allclose(rederive_se(old).se, table.se, rtol=1e-9)
