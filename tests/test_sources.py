"""Where images come from: files, folders, path lists, Parquet lists and tar shards, each resolved once
into what it read; anything unreadable is an error row at its index, never an abort and never a gap."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from ijepa_deploy.contract.errors import ImageError
from ijepa_deploy.runtime.sources import BadInput, FileSource, TarMember, expand_sources, iter_sources

pa = pytest.importorskip("pyarrow", reason="Parquet path lists need pyarrow (the [collections] extra)")
import pyarrow.parquet as pq  # noqa: E402


def _tar(folder: Path, target: Path, hard_link: bool = False) -> Path:
    with tarfile.open(target, "w") as tar:
        for i, path in enumerate(sorted(folder.iterdir())[:5]):
            tar.add(path, arcname=f"{i:06d}{path.suffix}")
            info = tarfile.TarInfo(f"{i:06d}.json")  # webdataset keeps metadata beside each image
            data = json.dumps({"key": i}).encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if hard_link:
            link = tarfile.TarInfo("000099.png")
            link.type, link.linkname = tarfile.LNKTYPE, "000000.png"
            tar.addfile(link)
            dangling = tarfile.TarInfo("000098.png")
            dangling.type, dangling.linkname = tarfile.LNKTYPE, "not-in-the-archive.png"
            tar.addfile(dangling)
    return target


@pytest.fixture(scope="module")
def sources(tmp_path_factory, photos) -> dict:
    root = tmp_path_factory.mktemp("sources")
    nested = root / "nested" / "deeper"
    nested.mkdir(parents=True)
    for i, path in enumerate(sorted(photos["eval"].iterdir())[:4]):
        (nested if i % 2 else root / "nested").joinpath(path.name).write_bytes(path.read_bytes())
    (root / "list.txt").write_text("# a path list\n" + "\n".join(os.path.relpath(p, root)  # relative to the list
                                                                for p in sorted(photos["calib"].iterdir())[:3]) + "\n")
    pq.write_table(pa.table({"path": [str(p) for p in sorted(photos["eval"].iterdir())[4:7]]}), root / "list.parquet")
    return {"folder": root / "nested", "txt": root / "list.txt", "parquet": root / "list.parquet",
            "tar": _tar(photos["calib"], root / "shard-000.tar")}


def test_sources_are_enumerated_in_a_deterministic_order(sources, photos):
    items = expand_sources([sources["folder"], sources["txt"], sources["parquet"], sources["tar"]])
    assert len(items) == 4 + 3 + 3 + 5
    folder = [p.path.relative_to(sources["folder"]).as_posix() for p in items[:4]]
    assert folder == sorted(folder, key=lambda p: p.split("/")) and any("/" in p for p in folder)  # recursive
    assert [p.path.name for p in items[4:7]] == [p.name for p in sorted(photos["calib"].iterdir())[:3]]
    assert all(isinstance(t, TarMember) for t in items[10:]) and [t.name for t in items[10:]] == [
        f"{i:06d}.png" for i in range(5)]  # images only, archive order; the .json members are metadata
    assert items[10].read_bytes() == sorted(photos["calib"].iterdir())[0].read_bytes()
    assert expand_sources([sources["tar"]]) == expand_sources([sources["tar"]])
    assert all(isinstance(s, FileSource) and s.path.is_absolute() for s in items[:10])


def test_bad_inputs_are_error_rows_at_their_index(tmp_path, photos):
    """A self-looping symlink, a FIFO, a broken link and a missing list entry each become a BadInput in
    place; the run is never aborted and later indices never shift."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(photos["eval"].iterdir())[:2]
    (folder / "a.png").write_bytes(good[0].read_bytes())
    (folder / "b_loop.jpg").symlink_to(folder / "b_loop.jpg")
    os.mkfifo(folder / "c_fifo.png")
    (folder / "d_broken.png").symlink_to(folder / "nowhere.png")
    (folder / "e.png").write_bytes(good[1].read_bytes())
    items = list(iter_sources([folder]))
    kinds = [type(s).__name__ for s in items]
    assert kinds == ["FileSource", "BadInput", "BadInput", "BadInput", "FileSource"]
    assert "symlink loop" in items[1].error and "not a regular file" in items[2].error
    assert "broken symlink" in items[3].error
    with pytest.raises(ImageError, match="symlink loop"):
        items[1].read_bytes()


def test_symlinked_folders_are_followed_and_loops_stopped(tmp_path, photos):
    real = tmp_path / "real"
    real.mkdir()
    (real / "x.png").write_bytes(sorted(photos["eval"].iterdir())[0].read_bytes())
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(real, target_is_directory=True)
    (root / "linked_back").symlink_to(root, target_is_directory=True)  # a loop
    items = list(iter_sources([root]))
    assert [type(s).__name__ for s in items] == ["FileSource", "BadInput"]
    assert items[0].path == root / "linked" / "x.png" and "symlink loop" in items[1].error


def test_null_and_non_string_parquet_paths_are_error_rows(tmp_path, photos):
    good = [str(p) for p in sorted(photos["eval"].iterdir())[:2]]
    pq.write_table(pa.table({"path": [good[0], None, good[1]]}), tmp_path / "nulls.parquet")
    items = list(iter_sources([tmp_path / "nulls.parquet"]))
    assert [type(s).__name__ for s in items] == ["FileSource", "BadInput", "FileSource"]
    assert "row 1" in items[1].error and "null" in items[1].error
    pq.write_table(pa.table({"path": [1, 2]}), tmp_path / "ints.parquet")
    assert all(isinstance(s, BadInput) and "not a path" in s.error for s in iter_sources([tmp_path / "ints.parquet"]))


def test_tar_hard_links_are_resolved_inside_the_archive(tmp_path, photos):
    items = list(iter_sources([_tar(photos["calib"], tmp_path / "links.tar", hard_link=True)]))
    assert len(items) == 7
    link, dangling = items[5], items[6]
    assert isinstance(link, TarMember) and link.name == "000099.png"
    assert link.read_bytes() == items[0].read_bytes()  # the data of the member it names
    assert isinstance(dangling, BadInput) and "not-in-the-archive" in dangling.error


def test_a_file_changed_after_resolution_is_refused(tmp_path, photos):
    image = tmp_path / "x.png"
    image.write_bytes(sorted(photos["eval"].iterdir())[0].read_bytes())
    source = next(iter_sources([image]))
    image.write_bytes(sorted(photos["eval"].iterdir())[1].read_bytes())  # replaced, same name
    with pytest.raises(ImageError, match="changed after the inputs were resolved"):
        source.read_bytes()


def test_a_missing_argument_is_refused_before_any_work(tmp_path):
    with pytest.raises(ImageError, match="input not found"):
        list(iter_sources([tmp_path / "nope"]))
