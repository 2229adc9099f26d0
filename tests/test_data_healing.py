"""A data space heals or refuses, whatever file of it is hurt: deleted, truncated, or overwritten with zeros."""
import json

import pytest

from hullft.compose import compose_config
from hullft.data import build as stages
from hullft.data import load_data_space
from hullft.data.space import space_files
from hullft.embedder import Embedder
from hullft.models import load_model

# index kinds: flat; IVF with its lists on disk; the same in parts; HNSW; a factory string (fast-scan PQ)
KINDS = {"flat": ["data.index=flat"],
         "ivf": ["data.index=ivf", "data.ivf_nlist=4", "data.ivf_nprobe=4"],
         "ivf-parts": ["data.index=ivf", "data.ivf_nlist=4", "data.ivf_nprobe=4", "data.index_part_rows=200"],
         "hnsw": ["data.index=hnsw"],
         "factory": ["data.index='IVF4,PQ8x4fs'", "data.ivf_nprobe=4"]}
DAMAGES = ["delete", "truncate", "zeros"]


def hurt(path, damage):
    """A new file in its place (an earlier space of this process still maps the old one: rewriting a mapped file
    in place would crash this process, not test the space)."""
    if damage == "delete":
        path.unlink()
        return
    size = path.stat().st_size
    tmp = path.with_name(path.name + ".hurt")
    tmp.write_bytes(path.read_bytes()[:max(1, size // 2)] if damage == "truncate" else bytes(size))
    tmp.replace(path)


@pytest.fixture(scope="module")
def spaces(tiny_overrides, tmp_path_factory):
    """Each kind's space, built once, its key and the names of its files."""
    cache = tmp_path_factory.mktemp("healing")
    mp = pytest.MonkeyPatch()
    mp.setenv("HULLFT_CACHE", str(cache))
    cfg = compose_config(tiny_overrides)
    loaded, embedder = load_model(cfg.model), Embedder(cfg.embedder)
    built = {}
    for kind, extra in KINDS.items():
        data = compose_config([*tiny_overrides, *extra]).data
        space = load_data_space(data, loaded.tokenizer, loaded.fingerprint, embedder)
        manifest = json.loads(stages.manifest_path(space.keys).read_text())
        files = sorted(space_files(space.keys, manifest).values()) + [
            stages.root() / f"queries-{space.keys.docs}.parquet", stages.manifest_path(space.keys)]
        built[kind] = (data, space.key, files)
    yield loaded, embedder, built
    mp.undo()


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_hurt_file_is_rebuilt_to_the_same_space(spaces, kind, damage, capsys):
    """Each file of the space in turn (token store, pool table and keys, embeddings, every index file and its
    lists, the queries file, the manifest): hurt, then the next load heals it to the same space (the same key, so
    the same records) with a line on stderr, never a traceback."""
    loaded, embedder, built = spaces
    data, key, files = built[kind]
    assert len(files) >= 7
    for path in files:
        hurt(path, damage)
        space = load_data_space(data, loaded.tokenizer, loaded.fingerprint, embedder)
        assert space.key == key, path.name
        assert space.search(space.candidates([0])[0], 5)[1][0] == 0
        assert all(f.exists() for f in files), path.name
        assert "Traceback" not in capsys.readouterr().err
