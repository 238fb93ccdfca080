"""Writers exclude each other (issue 19.4): a second tile or train into one directory fails at once with one line
naming the holder, a lock left by a dead process is taken over, and a store is never left unusable."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bioaug.cli import EXIT_BAD_INPUT, main
from bioaug.errors import StoreError
from bioaug.example import write_example_slide
from bioaug.locks import LOCK_NAME, writer_lock
from bioaug.store import PatchStore
from test_bad_inputs import TINY_GAN, _snapshot


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    """An example slide and a store tiled from it."""
    root = tmp_path_factory.mktemp("locks")
    slide = write_example_slide(root / "example.tiff", width=512, height=512, seed=5).path
    assert main(["tile", str(slide), "--out", str(root / "store"), "--quiet", "--qc", "false"]) == 0
    return slide, root / "store"


def _one_line(capfd) -> str:
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bioaug: error: "), lines
    return lines[0]


def test_a_second_tile_into_a_store_being_written_fails_at_once_naming_the_holder(tiled, tmp_path, capfd):
    slide, good = tiled
    store = tmp_path / "store"
    shutil.copytree(good, store)
    other = write_example_slide(tmp_path / "other.tiff", width=512, height=512, seed=6).path
    with writer_lock(store):
        before = _snapshot(store)
        capfd.readouterr()
        assert main(["tile", str(other), "--out", str(store), "--quiet", "--qc", "false"]) == EXIT_BAD_INPUT
        line = _one_line(capfd)
        assert f"{store}: another bioaug run (pid {os.getpid()} on " in line and "is writing here" in line
        assert _snapshot(store) == before
    assert not (store / LOCK_NAME).exists()
    assert main(["tile", str(other), "--out", str(store), "--quiet", "--qc", "false"]) == 0
    assert set(PatchStore(store).slides) == {"example.tiff", "other.tiff"}


def test_a_lock_left_by_a_dead_process_is_taken_over(tiled, tmp_path):
    slide, good = tiled
    store = tmp_path / "store"
    shutil.copytree(good, store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (store / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": "here", "command": "bioaug tile"}))
    assert main(["tile", str(slide), "--out", str(store), "--quiet", "--qc", "false"]) == 0
    assert not (store / LOCK_NAME).exists() and PatchStore(store).content_hash == PatchStore(good).content_hash


def test_a_second_train_into_one_run_fails_at_once(tmp_path, capfd):
    from conftest import make_disc_store

    store = make_disc_store(tmp_path / "store", per_class=8, slides=2)
    run = tmp_path / "run"
    with writer_lock(run):
        capfd.readouterr()
        code = main(["train", str(store.path), "--out", str(run), "--quiet", *TINY_GAN])
        assert code == EXIT_BAD_INPUT
        assert f"{run}: another bioaug run (pid {os.getpid()} on " in _one_line(capfd)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    assert not run.exists()  # the lock made it; nothing else was written, so it went with the lock


def test_a_store_whose_shards_no_longer_match_its_header_is_repaired_by_a_rerun(tiled, tmp_path):
    """What two unlocked writers used to leave: a shard the finished header does not count. Every reader
    refuses such a store; a rerun of tile reads only the header, so it can put the store right."""
    slide, good = tiled
    store = tmp_path / "store"
    shutil.copytree(good, store)
    first = sorted((store / "shards").iterdir())[0]
    shutil.copytree(first, first.with_name("example.tiff.0999"))
    with pytest.raises(StoreError, match="do not match the content hash"):
        PatchStore(store)
    assert main(["tile", str(slide), "--out", str(store), "--quiet", "--qc", "false"]) == 0
    assert PatchStore(store).content_hash == PatchStore(good).content_hash
