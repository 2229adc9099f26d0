import ast
import json
import os
import sysconfig
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tests build into their own cache, never the user's."""
    path = tmp_path_factory.mktemp("hullft-cache")
    os.environ["HULLFT_CACHE"] = str(path)
    yield path


def _stdlib_files(n: int):
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if 3000 < p.stat().st_size < 60000)
    return files[:n]


def write_pile_fixture(path: Path, per_domain: int = 24) -> Path:
    """A small Pile-format corpus of real text in three domains: code, docstrings and licence-like prose."""
    rows = []
    for f in _stdlib_files(per_domain):
        src = f.read_text(encoding="utf-8", errors="replace")
        rows.append({"text": src[:2500], "meta": {"pile_set_name": "Github"}})
        docs = [ast.get_docstring(node) for node in ast.walk(ast.parse(src))
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module))]
        prose = "\n\n".join(d for d in docs if d)[:2500]
        if len(prose) > 200:
            rows.append({"text": prose, "meta": {"pile_set_name": "Docs"}})
    licences = sorted(Path("/usr/share/common-licenses").glob("*")) or []
    for lic in licences:
        text = lic.read_text(encoding="utf-8", errors="replace")
        for i in range(0, min(len(text), 12000), 2500):
            rows.append({"text": text[i:i + 2500], "meta": {"pile_set_name": "Licenses"}})
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture(scope="session")
def pile_fixture(tmp_path_factory) -> Path:
    return write_pile_fixture(tmp_path_factory.mktemp("corpus") / "pile_small.jsonl")


TINY_RUN = ["model=tiny", "data=jsonl", "data.max_pool_per_domain=150", "data.max_length=96", "data.max_doc_chars=1200", "data.query_fraction=0.2",
            "k=40", "queries_per_domain=2", "eval.window=256"]


@pytest.fixture(scope="session")
def tiny_overrides(pile_fixture):
    return TINY_RUN + [f"data.path={pile_fixture}"]
