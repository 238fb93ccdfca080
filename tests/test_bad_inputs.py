"""Every bad input a new user is likely to try, across the stages: exit code 2, one line naming it, nothing left.

Each case builds its inputs in a fresh directory, runs the command line in-process (stdout and stderr captured
at the file-descriptor level, so C libraries and third-party loggers would show too) and checks:

- the exit code is 2 and stdout is empty;
- stderr is exactly one line, ``bioaug: error: ...``, naming the file or option at fault;
- no partial output: the case directory holds the same files with the same sizes and contents as before, and
  the output asked for does not exist (or, when it was an existing file, is unchanged).

Cases marked ``#13.N`` are those of issue 13's item N; the others passed before and are kept from regressing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from bioaug.cli import EXIT_BAD_INPUT, main
from conftest import SHARED_DATA, make_disc_store

SVS = SHARED_DATA / "openslide-cmu-1-small-region" / "CMU-1-Small-Region.svs"
TINY_GAN = ["--steps", "2", "--batch-size", "6", "--channels", "8", "--max-channels", "16", "--z-dim", "8",
            "--device", "cpu"]


@dataclass
class Inputs:
    """Good inputs made once per module: an example slide with its points, a labelled store and a GAN run."""

    slide: Path
    points: Path
    store: Path
    run: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    from bioaug.example import write_example_slide

    root = tmp_path_factory.mktemp("good")
    example = write_example_slide(root / "example.tiff", width=512, height=512, seed=5)
    store = make_disc_store(root / "store", per_class=8, slides=2)
    assert main(["train", str(store.path), "--out", str(root / "run"), "--quiet", *TINY_GAN]) == 0
    return Inputs(slide=example.path, points=example.nuclei_csv, store=store.path, run=root / "run")


def _read_only_place(ws: Path) -> Path:
    """A directory where nothing can be created, even as root (sysfs), or a chmod 555 one for other users."""
    if os.geteuid() != 0:
        place = ws / "read-only"
        place.mkdir()
        place.chmod(0o555)
        return place / "out"
    if Path("/sys/kernel").is_dir():
        return Path("/sys") / f"bioaug-test-{os.getpid()}"
    pytest.skip("no read-only place to write to as root")


def _copy_store(inputs: Inputs, ws: Path) -> tuple[Path, Path]:
    """A copy of the good store and its first shard, for cases that damage it."""
    store = ws / "store"
    shutil.copytree(inputs.store, store)
    return store, sorted((store / "shards").iterdir())[0]


def _zero_images(shard: Path) -> None:
    images = np.load(shard / "images.npy", mmap_mode="r+")
    images[:] = 0
    images.flush()


def _text(ws: Path, name: str, content: str | bytes) -> Path:
    path = ws / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _cut(source: Path, ws: Path, fraction: float, name: str) -> Path:
    data = source.read_bytes()
    return _text(ws, name, data[: int(len(data) * fraction)])


def _svs() -> Path:
    if not SVS.exists():
        pytest.skip(f"real data not available: {SVS}")
    return SVS


# Each case: (id, build(ws, inputs) -> (argv, output path that must not appear, fragment the line must name)).
Case = Callable[[Path, Inputs], tuple[list[str], Path | None, str]]


def _tile(ws: Path, inputs: Inputs, *extra: str, slide: Path | None = None, out: Path | None = None):
    out = out or ws / "out"
    return ["tile", str(slide or inputs.slide), "--out", str(out), "--quiet", *extra], out


def case_missing_slide(ws, inputs):
    argv, out = _tile(ws, inputs, slide=ws / "nope.svs")
    return argv, out, "nope.svs"


def case_text_file_named_svs(ws, inputs):
    argv, out = _tile(ws, inputs, slide=_text(ws, "fake.svs", "this is not a slide\n"))
    return argv, out, "fake.svs"


def case_truncated_example_tiff(ws, inputs):
    argv, out = _tile(ws, inputs, slide=_cut(inputs.slide, ws, 0.6, "broken.tiff"))
    return argv, out, "broken.tiff: truncated"


def case_svs_cut_in_half(ws, inputs):  # 13.2
    argv, out = _tile(ws, inputs, slide=_cut(_svs(), ws, 0.5, "half.svs"))
    return argv, out, "half.svs: truncated"


def case_svs_cut_at_80_percent_with_slide_mpp(ws, inputs):  # 13.2
    argv, out = _tile(ws, inputs, "--slide-mpp", "0.5", slide=_cut(_svs(), ws, 0.8, "most.svs"))
    return argv, out, "most.svs: truncated"


def case_png_without_mpp(ws, inputs):
    plain = ws / "plain.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(plain)
    argv, out = _tile(ws, inputs, slide=plain)
    return argv, out, "plain.png: no µm/px"


def case_image_without_tissue(ws, inputs):
    blank = ws / "blank.png"
    Image.fromarray(np.full((600, 600, 3), 243, np.uint8)).save(blank)
    argv, out = _tile(ws, inputs, "--slide-mpp", "0.5", slide=blank)
    return argv, out, "blank.png"


def case_points_outside_the_slide(ws, inputs):
    points = _text(ws, "points.csv", "slide,x,y,label\nexample.tiff,10,10,a\nexample.tiff,5000,20,b\n")
    argv, out = _tile(ws, inputs, "--label-by", "points", "--labels", str(points))
    return argv, out, "points.csv"


def case_points_csv_without_y(ws, inputs):
    points = _text(ws, "points.csv", "slide,x,label\nexample.tiff,10,a\n")
    argv, out = _tile(ws, inputs, "--label-by", "points", "--labels", str(points))
    return argv, out, "points.csv"


def case_points_csv_with_nan_coordinates(ws, inputs):  # 19.5: the row was dropped without a word
    points = _text(ws, "points.csv", "slide,x,y,label\nexample.tiff,10,10,a\nexample.tiff,nan,20,b\n")
    argv, out = _tile(ws, inputs, "--label-by", "points", "--labels", str(points))
    return argv, out, "points.csv: line 3: x and y must be finite numbers, got 'nan', '20'"


def case_points_geojson_with_a_region_polygon(ws, inputs):  # 19.5: a "Tumor" region became a nucleus
    import json

    region = {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
              "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [400, 0], [400, 400], [0, 400], [0, 0]]]}}
    points = _text(ws, "example.geojson", json.dumps({"type": "FeatureCollection", "features": [region]}))
    argv, out = _tile(ws, inputs, "--label-by", "points", "--labels", str(points))
    return argv, out, "example.geojson: 1 polygons for example.tiff are larger than a nucleus"


def case_patch_size_too_small(ws, inputs):
    argv, out = _tile(ws, inputs, "--patch-size", "4")
    return argv, out, "--patch-size"


def case_mpp_infinite(ws, inputs):  # 13.6
    argv, out = _tile(ws, inputs, "--mpp", "inf")
    return argv, out, "--mpp"


def case_mpp_nan(ws, inputs):  # 13.6
    argv, out = _tile(ws, inputs, "--mpp", "nan")
    return argv, out, "--mpp"


def case_slide_mpp_infinite_in_config(ws, inputs):  # 13.6
    argv, out = _tile(ws, inputs, "--config", str(_text(ws, "tile.yaml", "slide_mpp: .inf\n")))
    return argv, out, "tile.yaml"


def case_config_not_utf8(ws, inputs):  # 13.8
    argv, out = _tile(ws, inputs, "--config", str(_text(ws, "tile.yaml", b"mpp: 0.5\nlabel_by: \xff\xfe\n")))
    return argv, out, "tile.yaml: config is not UTF-8"


def case_config_unknown_key(ws, inputs):
    argv, out = _tile(ws, inputs, "--config", str(_text(ws, "tile.yaml", "patch_sise: 64\n")))
    return argv, out, "tile.yaml"


def case_config_float_for_an_integer(ws, inputs):  # 13.9
    argv, out = _tile(ws, inputs, "--config", str(_text(ws, "tile.yaml", "patch_size: 32.5\n")))
    return argv, out, "tile.yaml: option 'patch_size': 32.5 is not a whole number"


def case_flag_float_for_an_integer(ws, inputs):  # 13.9 (and argparse usage errors, 13.11)
    argv, out = _tile(ws, inputs, "--workers", "1.5")
    return argv, out, "--workers"


def case_tile_missing_out(ws, inputs):  # 13.11: a usage error is one line too
    return ["tile", str(inputs.slide)], None, "--out"


def case_tile_out_is_a_file(ws, inputs):  # 13.1
    argv, out = _tile(ws, inputs, out=_text(ws, "taken", "someone's file\n"))
    return argv, None, "taken"


def case_tile_out_below_a_file(ws, inputs):  # 13.1
    _text(ws, "taken", "someone's file\n")
    argv, out = _tile(ws, inputs, out=ws / "taken" / "store")
    return argv, None, "taken"


def case_tile_out_read_only(ws, inputs):  # 13.1
    argv, out = _tile(ws, inputs, out=_read_only_place(ws))
    return argv, out, str(out)


def _slide_folder(ws: Path, inputs: Inputs, *names: str) -> Path:
    folder = ws / "slides"
    folder.mkdir()
    for name in names:
        shutil.copy(inputs.slide, folder / name)
    return folder


def _tiled_store(ws: Path, inputs: Inputs, slide: Path) -> Path:
    """A store in ``ws`` tiled from ``slide``, as a user's earlier run left it."""
    out = ws / "out"
    assert main(["tile", str(slide), "--out", str(out), "--quiet", "--qc", "false"]) == 0
    return out


def case_tile_two_slides_whose_names_sanitise_alike(ws, inputs):  # 19.2: one shard held half the patches
    argv, out = _tile(ws, inputs, slide=_slide_folder(ws, inputs, "case 1.tiff", "case_1.tiff"))
    return argv, out, "give the same shard names (case_1.tiff.*)"


def case_tile_two_cjk_names_of_one_length(ws, inputs):  # 19.2
    argv, out = _tile(ws, inputs, slide=_slide_folder(ws, inputs, "病例.tiff", "标本.tiff"))
    return argv, out, "病例.tiff: its name and that of"


def case_tile_slide_whose_name_sanitises_like_one_in_the_store(ws, inputs):  # 19.2
    folder = _slide_folder(ws, inputs, "case 1.tiff", "case_1.tiff")
    out = _tiled_store(ws, inputs, folder / "case 1.tiff")
    argv, _ = _tile(ws, inputs, "--qc", "false", slide=folder / "case_1.tiff", out=out)
    return argv, None, "that of slide 'case 1.tiff' already in"


def case_tile_other_slide_of_the_same_name_into_a_store(ws, inputs):  # 19.3: a re-scan replaced the old patches
    from bioaug.example import write_example_slide

    out = _tiled_store(ws, inputs, inputs.slide)
    rescan = write_example_slide(ws / "rescan" / "example.tiff", width=512, height=512, seed=6).path
    argv, _ = _tile(ws, inputs, "--qc", "false", slide=rescan, out=out)
    return argv, None, f"rescan/example.tiff: a different slide of this name ({inputs.slide}) is already in"


def case_tile_slide_that_is_a_symlink_loop(ws, inputs):  # 19.10: was "no such file"
    (ws / "loop.svs").symlink_to(ws / "loop.svs")
    argv, out = _tile(ws, inputs, slide=ws / "loop.svs")
    return argv, out, "loop.svs: symbolic link loop"


def case_tile_slide_that_is_a_dangling_symlink(ws, inputs):  # 19.6
    (ws / "moved.svs").symlink_to(ws / "elsewhere" / "moved.svs")
    argv, out = _tile(ws, inputs, slide=ws / "moved.svs")
    return argv, out, f"moved.svs: dangling symbolic link (to {ws / 'elsewhere' / 'moved.svs'}, which does not"


def _train(ws: Path, store: Path, *extra: str, out: Path | None = None):
    out = out or ws / "run"
    return ["train", str(store), "--out", str(out), "--quiet", *TINY_GAN, *extra], out


def case_train_missing_store(ws, inputs):
    argv, out = _train(ws, ws / "no-store")
    return argv, out, "no-store"


def case_train_unlabelled_store(ws, inputs):
    from bioaug.store import StoreHeader, StoreWriter

    writer = StoreWriter(ws / "unlabelled", StoreHeader(patch_size=32, mpp=0.5, class_names=[]))
    writer.write_shard("a", np.zeros((3, 32, 32, 3), np.uint8), [{"slide": "a"}] * 3, input_key="a")
    writer.finalize()
    argv, out = _train(ws, ws / "unlabelled")
    return argv, out, "unlabelled"


def case_train_zeroed_shard(ws, inputs):  # 13.3
    store, shard = _copy_store(inputs, ws)
    _zero_images(shard)
    argv, out = _train(ws, store)
    return argv, out, f"{shard}: images.npy does not match the SHA-256"


def case_train_shard_of_the_wrong_shape(ws, inputs):  # 13.3
    store, shard = _copy_store(inputs, ws)
    np.save(shard / "images.npy", np.zeros((12, 16, 16, 3), np.uint8))
    argv, out = _train(ws, store)
    return argv, out, f"{shard}: images.npy holds uint8 of shape (12, 16, 16, 3)"


def case_train_shard_file_missing(ws, inputs):  # 13.3
    store, shard = _copy_store(inputs, ws)
    (shard / "images.npy").unlink()
    argv, out = _train(ws, store)
    return argv, out, f"{shard}: unreadable images.npy"


def case_train_config_float_steps(ws, inputs):  # 13.9: 2.7 steps used to run 2
    config = _text(ws, "train.yaml", "steps: 2.7\n")
    argv = ["train", str(inputs.store), "--out", str(ws / "run"), "--quiet", "--config", str(config)]
    return argv, ws / "run", "train.yaml: option 'steps': 2.7 is not a whole number"


def case_train_infinite_learning_rate(ws, inputs):  # 13.6
    argv, out = _train(ws, inputs.store, "--lr-g", "inf")
    return argv, out, "--lr-g"


def case_train_out_is_a_file(ws, inputs):  # 13.1
    argv, out = _train(ws, inputs.store, out=_text(ws, "taken", "someone's file\n"))
    return argv, None, "taken"


def case_train_out_is_a_patch_store(ws, inputs):  # 19.10: the run's files went in beside the shards
    store, _ = _copy_store(inputs, ws)
    argv, _ = _train(ws, inputs.store, out=store)
    return argv, None, f"{store}: is a patch store; a training run needs a directory of its own"


def case_train_out_read_only(ws, inputs):  # 13.1
    argv, out = _train(ws, inputs.store, out=_read_only_place(ws))
    return argv, out, str(out)


def _augment(ws: Path, run: Path, *extra: str, out: Path | None = None):
    out = out or ws / "synth"
    return ["augment", str(run), "--out", str(out), "--quiet", "--per-class", "2", "--audit", "false",
            "--sheets", "false", *extra], out


def _copy_run(inputs: Inputs, ws: Path) -> Path:
    run = ws / "run"
    shutil.copytree(inputs.run, run)
    return run


def case_augment_missing_run_directory(ws, inputs):  # 13.10: the run itself is named, not its parent
    argv, out = _augment(ws, ws / "runs" / "missing")
    return argv, out, f"{ws / 'runs' / 'missing'}: no such run directory"


def case_augment_hostile_checkpoint(ws, inputs):  # 13.10
    import torch

    class Hostile:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    run = _copy_run(inputs, ws)
    torch.save({"format": "bioaug.gan.checkpoint/1", "payload": Hostile()}, run / "checkpoint.pt")
    argv, out = _augment(ws, run)
    return argv, out, "checkpoint.pt: holds a Python object"


def case_augment_corrupt_checkpoint(ws, inputs):
    run = _copy_run(inputs, ws)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    argv, out = _augment(ws, run)
    return argv, out, "checkpoint.pt: corrupt or truncated checkpoint"


def case_augment_both_counts(ws, inputs):
    argv, out = _augment(ws, inputs.run, "--balance-to", "10")
    return argv, out, "per_class"


def case_augment_more_patches_than_memory_or_disk_hold(ws, inputs):  # 19.7: grew to 22 GB, killed by the kernel
    argv, out = _augment(ws, inputs.run)
    argv[argv.index("--per-class") + 1] = "1000000000"
    return argv, out, "--per-class: 3,000,000,000 patches need about 2,861.0 GiB of memory"


def case_augment_out_is_a_file(ws, inputs):  # 13.1
    argv, out = _augment(ws, inputs.run, out=_text(ws, "taken", "someone's file\n"))
    return argv, None, "taken"


def case_augment_out_read_only(ws, inputs):  # 13.1
    argv, out = _augment(ws, inputs.run, out=_read_only_place(ws))
    return argv, out, str(out)


def case_killed_augment_store(ws, inputs):  # 13.10: the message names augment, not tiling
    from bioaug.store import StoreHeader, StoreWriter

    writer = StoreWriter(ws / "synth", StoreHeader(patch_size=32, mpp=0.5, class_names=["a"], kind="synthetic"))
    writer.write_shard("synthetic.00000", np.zeros((2, 32, 32, 3), np.uint8), [{"slide": "s", "label": "a"}] * 2,
                       input_key="k")
    return ["verify", str(ws / "synth"), "--quiet"], None, "the bioaug augment run that writes it did not finish"


def _evaluate(ws: Path, store: Path, *, out: Path | None = None):
    out = out or ws / "report"
    return ["evaluate", str(store), "--out", str(out), "--quiet", "--folds", "2", "--budgets", "1.0", "--seeds",
            "0", "--arms", "real"], out


def case_evaluate_missing_store(ws, inputs):
    argv, out = _evaluate(ws, ws / "no-store")
    return argv, out, "no-store"


def case_evaluate_out_is_a_file(ws, inputs):  # 13.1
    argv, out = _evaluate(ws, inputs.store, out=_text(ws, "taken", "someone's file\n"))
    return argv, None, "taken"


def case_evaluate_out_read_only(ws, inputs):  # 13.1
    argv, out = _evaluate(ws, inputs.store, out=_read_only_place(ws))
    return argv, out, str(out)


def case_evaluate_external_store_of_another_patch_size(ws, inputs):  # 19.10: fold stores were written first
    argv, out = _evaluate(ws, inputs.store)
    other = make_disc_store(ws / "other-site", per_class=8, slides=2, patch_size=48, slide_prefix="site")
    return [*argv, "--external", f"site-b={other.path}"], out, "48 px patches"


def case_evaluate_generator_seed_the_evaluation_sets(ws, inputs):  # 19.10: silently overridden
    argv, out = _evaluate(ws, inputs.store)
    return [*argv, "--generator-seed", "3"], out, "--generator-seed: is set by the evaluation (from split_seed)"


def case_evaluate_view_larger_than_the_patches(ws, inputs):  # 25.2
    argv, out = _evaluate(ws, inputs.store)
    return [*argv, "--classifier-view", "40"], out, "view of 40 px is larger than its 32 px patches"


def case_evaluate_split_file_of_other_slides(ws, inputs):  # 25.1
    argv, out = _evaluate(ws, inputs.store)
    others = make_disc_store(ws / "others", per_class=8, slides=3, slide_prefix="elsewhere")
    splits = ws / "splits.json"
    from bioaug.evaluate import Splits
    Splits.make(others.slides, others.labels, folds=2, seed=0, group_by="slide", draws=[0]).save(splits)
    return [*argv, "--splits", str(splits)], out, "are not in the split (e.g. slide0, slide1)"


def case_verify_not_a_store(ws, inputs):
    (ws / "empty").mkdir()
    return ["verify", str(ws / "empty")], None, "not a patch store"


def case_verify_edited_manifest(ws, inputs):  # 13.3
    store, shard = _copy_store(inputs, ws)
    manifest = shard / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("small", "large", 1))
    return ["verify", str(store), "--quiet"], None, f"{shard}: manifest.csv does not match"


CASES = {name[len("case_"):]: function for name, function in sorted(globals().items())
         if name.startswith("case_")}


def _snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` with a hash of its bytes (directories as markers, symbolic links by target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"link to {os.readlink(path)}"
        else:
            found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


#: Cases that break the promise today, each with why; strict, so a fix shows up as a failure to remove it here.
KNOWN_BROKEN: dict[str, str] = {}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_BROKEN[name], strict=True))
                                  if name in KNOWN_BROKEN else name for name in CASES])
def test_bad_input_gives_one_line_exit_2_and_no_output(name, inputs, tmp_path, capfd):
    ws = tmp_path / "case"
    ws.mkdir()
    argv, out, fragment = CASES[name](ws, inputs)
    good_before, ws_before = _snapshot(inputs.store.parent), _snapshot(ws)
    capfd.readouterr()
    code = main(argv)
    captured = capfd.readouterr()
    assert code == EXIT_BAD_INPUT, (code, captured.err)
    assert captured.out == "", captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bioaug: error: "), captured.err
    assert fragment in lines[0], lines[0]
    assert _snapshot(ws) == ws_before, "the run left something behind or changed an input"
    assert _snapshot(inputs.store.parent) == good_before, "the run changed the shared good inputs"
    if out is not None:
        assert not out.exists(), f"{out} was created"



def test_a_full_disk_while_tiling_gives_one_line_and_no_half_shard(inputs, tmp_path, capfd, monkeypatch):  # 19.8
    """numpy reports a short write as ``OSError: N requested and M written``, naming no file: a traceback."""
    def full_disk(file, array, *args, **kwargs):
        raise OSError(f"{array.nbytes} requested and 4096 written")

    store = tmp_path / "store"
    assert main(["tile", str(inputs.slide), "--out", str(store), "--quiet", "--qc", "false"]) == 0
    other = tmp_path / "other.tiff"
    shutil.copy(inputs.slide, other)
    monkeypatch.setattr(np, "save", full_disk)
    capfd.readouterr()
    assert main(["tile", str(other), "--out", str(store), "--quiet", "--qc", "false"]) == EXIT_BAD_INPUT
    lines = [line for line in capfd.readouterr().err.splitlines() if not line.startswith("bioaug: INFO: ")]
    assert len(lines) == 1 and lines[0].startswith(f"bioaug: error: {store / 'shards'}: cannot write shard "), lines
    assert "requested and 4096 written; is the disk full?" in lines[0] and "rerun" in lines[0]
    assert sorted(p.name for p in (store / "shards").iterdir() if not p.name.startswith("example.tiff.")) == []
    monkeypatch.undo()
    assert main(["tile", str(other), "--out", str(store), "--quiet", "--qc", "false"]) == 0


def test_a_full_disk_under_any_atomic_write_names_the_file(tmp_path, monkeypatch):  # 19.8
    import errno

    from bioaug.errors import OutputError
    from bioaug.provenance import write_json_atomic

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OutputError) as caught:
        write_json_atomic(tmp_path / "store.json", {"a": 1})
    assert str(caught.value) == (f"{tmp_path / 'store.json'}: cannot be written (No space left on device; "
                                 f"is the disk full?)")
    assert list(tmp_path.iterdir()) == []
