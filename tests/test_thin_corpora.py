"""Thin and degenerate corpora build a space, or stop in one line saying what is too thin; never a traceback."""
import json

import pytest

from hullft.compose import compose_config
from hullft.data import load_data_space
from hullft.embedder import Embedder
from hullft.errors import UserError
from hullft.models import load_model
from tests.conftest import TINY_RUN

PROSE = ("The harness reads every document of a domain, cuts it into sequences, and keeps a seeded share of them "
         "for its pool; what is left of a thin corpus must still make a space or say why it cannot. ")


def corpus(path, docs):
    path.write_text("".join(json.dumps({"text": text, "meta": {"pile_set_name": domain}}) + "\n"
                            for domain, text in docs))
    return path


def variety(i):
    return f"Document {i}. " + PROSE * (1 + i % 3) + f" It ends with its own number, {i * 7919}."


CORPORA = {
    "every document a duplicate": ([("Docs", PROSE * 3)] * 40, []),
    "every document shorter than min_length": ([("Docs", f"w{i}") for i in range(40)], []),
    "caps smaller than a unit": ([("Docs", variety(i)) for i in range(60)], ["data.max_docs_per_domain=3",
                                                                            "data.unit_docs=12"]),
    "a domain of one document": ([("Docs", variety(i)) for i in range(40)] + [("Lonely", variety(99))], []),
    "a corpus of one line": ([("Docs", variety(1))], []),
    "units that keep nothing": ([("Docs", variety(i)) for i in range(80)] + [("Code", variety(i + 500))
                                                                            for i in range(80)],
                                ["data.unit_docs=4", "data.max_pool_per_domain=3"]),
}


@pytest.mark.parametrize("name", CORPORA)
def test_a_thin_corpus_builds_or_says_what_is_too_thin(tmp_path, monkeypatch, name):
    docs, extra = CORPORA[name]
    monkeypatch.setenv("HULLFT_CACHE", str(tmp_path / "cache"))
    path = corpus(tmp_path / "thin.jsonl", docs)
    cfg = compose_config([*TINY_RUN, f"data.path={path}", *extra])
    loaded = load_model(cfg.model)
    try:
        space = load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, Embedder(cfg.embedder))
    except UserError as e:
        line = str(e)
        assert "\n" not in line and ("data." in line or "domain" in line), line
        return
    assert len(space.pool) > 0 and space.embeddings.shape[0] == len(space.pool)
