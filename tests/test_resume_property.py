"""Resume as a property: any sequence of kills, input edits (reorder, replace, add, remove), option changes
and resumes ends, at every resume, either in exactly the collection an uninterrupted run of the current
inputs and options gives, or in a one-line refusal that changed nothing. A resume with nothing changed
since the job started is never refused."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ijepa_deploy.collection import embed_collection
from ijepa_deploy.contract.errors import UserError
from ijepa_deploy.runtime import EmbedConfig, Embedder, read_embeddings

pytest.importorskip("pyarrow", reason="collections need pyarrow (the [collections] extra)")

CASES = 40
ACTIONS = st.one_of(
    st.tuples(st.just("run"), st.integers(0, 4)),  # run or resume; killed after N batches (4: not killed)
    st.tuples(st.just("reorder"), st.integers(0, 5)),
    st.tuples(st.just("replace"), st.integers(0, 5)),
    st.tuples(st.just("add"), st.integers(0, 5)),
    st.tuples(st.just("remove"), st.integers(0, 5)),
    st.tuples(st.just("option"), st.sampled_from(["resolution", "dtype", "shard_size", "batch_size"])),
)


class Killed(Exception):
    pass


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


class Scenario:
    def __init__(self, root: Path, artifacts: Path, pool: list[Path]):
        self.root, self.artifacts, self.pool = root, artifacts, pool
        self.images = root / "images"
        self.images.mkdir()
        for i, path in enumerate(pool[:6]):
            shutil.copy(path, self.images / f"{i:02d}.png")
        self.listing = root / "list.txt"
        self.write_listing(sorted(p.name for p in self.images.iterdir()))
        self.options = {"resolution": None, "dtype": "float32", "shard_size": 2, "batch_size": 2}
        self.out, self.fresh = root / "emb", itertools.count()
        self.changed_since_job = False

    def write_listing(self, names: list[str]) -> None:
        self.listing.write_text("".join(f"images/{n}\n" for n in names))

    def names(self) -> list[str]:
        return [line.removeprefix("images/") for line in self.listing.read_text().split()]

    def edit(self, action: str, k: int) -> None:
        names = self.names()
        if action == "reorder" and len(names) > 1:
            names = names[k % len(names):] + names[:k % len(names)]
        elif action == "replace" and names:
            shutil.copy(self.pool[6 + k], self.images / names[k % len(names)])
        elif action == "add":
            name = f"added{next(self.fresh)}.png"
            shutil.copy(self.pool[6 + k], self.images / name)
            names.insert(k % (len(names) + 1), name)
        elif action == "remove" and len(names) > 1:
            names.pop(k % len(names))
        self.write_listing(names)
        self.changed_since_job = True

    def change_option(self, name: str) -> None:
        flips = {"resolution": (None, (28, 42)), "dtype": ("float32", "float16"), "shard_size": (2, 3),
                 "batch_size": (2, 3)}[name]
        self.options[name] = flips[1] if self.options[name] == flips[0] else flips[0]
        if name != "batch_size":  # batch size does not change the vectors: a resume may differ in it
            self.changed_since_job = True

    def config(self) -> EmbedConfig:
        return EmbedConfig(backend="onnxruntime", resolution=self.options["resolution"],
                           batch_size=self.options["batch_size"])

    def run(self, kill_after: int) -> None:
        calls = itertools.count(1)

        def progress(done, total):
            if next(calls) > kill_after:
                raise Killed()

        existed = (self.out / "run.json").exists()
        before = _snapshot(self.out)
        try:
            embed_collection([self.listing], self.out, self.artifacts, config=self.config(), resume=existed,
                             dtype=self.options["dtype"], shard_size=self.options["shard_size"],
                             progress=progress if kill_after < 4 else None)
        except Killed:
            if not (self.out / "run.json").exists():
                self.changed_since_job = False
            return
        except UserError as exc:
            assert "\n" not in str(exc) and existed and self.changed_since_job, str(exc)
            assert _snapshot(self.out) == before  # a refusal writes nothing
            return
        self.check_equals_an_uninterrupted_run()
        if not existed:
            self.changed_since_job = False

    def check_equals_an_uninterrupted_run(self) -> None:
        got, paths = read_embeddings(self.out)
        with Embedder.load(self.artifacts, config=self.config()) as embedder:
            expected = embedder.embed([self.images / n for n in self.names()])
        assert paths == [str(self.images / n) for n in self.names()]
        assert np.allclose(got, expected, atol=5e-3 if self.options["dtype"] == "float16" else 1e-6)


def test_resume_outcome_is_the_uninterrupted_collection_or_a_refusal(tiny_fp32, photos):
    pool = sorted(photos["eval"].iterdir()) + sorted(photos["calib"].iterdir())

    @settings(max_examples=CASES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(ACTIONS, min_size=1, max_size=7))
    @example([("run", 1), ("option", "resolution")])  # killed, then resumed with another option each
    @example([("run", 1), ("option", "dtype")])
    @example([("run", 1), ("option", "shard_size")])
    @example([("run", 1), ("option", "batch_size")])  # may differ: must resume
    @example([("run", 2), ("replace", 4)])  # killed, then an input edited
    @example([("run", 0), ("reorder", 1), ("run", 1), ("reorder", 5)])
    def check(actions):
        with tempfile.TemporaryDirectory() as tmp:
            scenario = Scenario(Path(tmp), tiny_fp32, pool)
            for action, arg in actions + [("run", 4)]:
                if action == "run":
                    scenario.run(arg)
                elif action == "option":
                    scenario.change_option(arg)
                else:
                    scenario.edit(action, arg)

    check()
