"""The command line: help, dry runs, and one-line errors with no partial output for bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bioaug.cli import EXIT_BAD_INPUT, main
from bioaug.example import write_example_slide


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_slide(tmp_path_factory.mktemp("slide") / "example.tiff", width=1024, height=768, seed=5)


def run_bad(capsys, argv, out, *names):
    """Run the CLI, expecting exit 2, one error line naming each of ``names``, and no store written."""
    assert main(argv) == EXIT_BAD_INPUT
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bioaug: error:")]
    assert len(errors) == 1, errors
    for name in names:
        assert name in errors[0], errors[0]
    assert not out.exists(), "a partial store was left behind"
    return errors[0]


def test_missing_file(tmp_path, capsys):
    run_bad(capsys, ["tile", str(tmp_path / "nope.svs"), "--out", str(tmp_path / "s")], tmp_path / "s", "nope.svs")


def test_text_file_named_svs(tmp_path, capsys):
    fake = tmp_path / "fake.svs"
    fake.write_text("this is not a slide\n")
    line = run_bad(capsys, ["tile", str(fake), "--out", str(tmp_path / "s")], tmp_path / "s", "fake.svs")
    assert "cannot read" in line or "not a slide" in line


def test_truncated_slide(example, tmp_path, capsys):
    broken = tmp_path / "broken.tiff"
    data = example.path.read_bytes()
    broken.write_bytes(data[: len(data) * 6 // 10])
    line = run_bad(capsys, ["tile", str(broken), "--out", str(tmp_path / "s")], tmp_path / "s", "broken.tiff")
    assert "truncated" in line or "damaged" in line


def test_no_mpp(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(plain)
    line = run_bad(capsys, ["tile", str(plain), "--out", str(tmp_path / "s")], tmp_path / "s", "plain.png")
    assert "--slide-mpp" in line


def test_empty_tissue(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((600, 600, 3), 243, np.uint8)).save(blank)
    line = run_bad(capsys, ["tile", str(blank), "--slide-mpp", "0.5", "--out", str(tmp_path / "s")],
                   tmp_path / "s", "blank.png")
    assert "no tissue" in line


@pytest.mark.parametrize("table, expected", [
    ("slide,x,y,label\nexample.tiff,10,10,a\nexample.tiff,5000,20,b\n", ["outside the slide"]),
    ("slide,x,label\nexample.tiff,10,a\n", ["needs columns", "y"]),
], ids=["points outside the slide", "csv without needed columns"])
def test_bad_point_tables(example, tmp_path, capsys, table, expected):
    points = tmp_path / "points.csv"
    points.write_text(table)
    line = run_bad(capsys, ["tile", str(example.path), "--label-by", "points", "--labels", str(points),
                            "--out", str(tmp_path / "s")], tmp_path / "s", "points.csv")
    assert all(fragment in line for fragment in expected), line


def test_unknown_option_value_is_a_one_line_error(example, tmp_path, capsys):
    run_bad(capsys, ["tile", str(example.path), "--patch-size", "4", "--out", str(tmp_path / "s")],
            tmp_path / "s", "--patch-size")


def test_dry_run_prints_resolved_config(tmp_path, capsys):
    config = tmp_path / "tile.yaml"
    config.write_text("patch_size: 64\nmpp: 0.25\n")
    assert main(["tile", "x.svs", "--out", str(tmp_path / "s"), "--config", str(config), "--mpp", "0.5",
                 "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["patch_size"] == 64 and resolved["mpp"] == 0.5


def test_config_file_with_unknown_key(tmp_path, capsys):
    config = tmp_path / "tile.yaml"
    config.write_text("patch_sise: 64\n")
    run_bad(capsys, ["tile", "x.svs", "--out", str(tmp_path / "s"), "--config", str(config)], tmp_path / "s",
            "tile.yaml", "patch_sise")


def test_console_script_exit_code_and_single_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bioaug.cli", "tile", str(tmp_path / "missing.ndpi"),
                             "--out", str(tmp_path / "s")], capture_output=True, text=True)
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip().splitlines() == [f"bioaug: error: {tmp_path / 'missing.ndpi'}: no such file"]


def test_cli_tiles_and_reports(example, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["tile", str(example.path), "--label-by", "points", "--labels", str(example.nuclei_csv),
                 "--out", str(out), "--quiet"]) == 0
    assert "patches of 32 px at 0.5" in capsys.readouterr().out
    shutil.rmtree(out / "qc")
    assert main(["tile", str(example.path), "--label-by", "points", "--labels", str(example.nuclei_csv),
                 "--out", str(out), "--quiet"]) == 0
    assert (out / "qc" / "example.tiff.png").is_file()


def test_help_lists_every_tile_option(capsys):
    with pytest.raises(SystemExit):
        main(["tile", "--help"])
    text = capsys.readouterr().out
    for flag in ("--patch-size", "--mpp", "--slide-mpp", "--label-by", "--labels", "--clusters", "--workers"):
        assert flag in text


# -- train ----------------------------------------------------------------------------------------------------

def test_train_dry_run_prints_the_config_resolved_for_the_store(disc_store, tmp_path, capsys):
    assert main(["train", str(disc_store.path), "--out", str(tmp_path / "run"), "--dry-run", "--steps", "7"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["steps"] == 7 and config["channels"] == 32 and config["batch_size"] == 64
    assert not (tmp_path / "run").exists()


def test_train_runs_from_the_command_line(disc_store, tmp_path, capsys):
    argv = ["train", str(disc_store.path), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "6",
            "--channels", "8", "--max-channels", "16", "--z-dim", "8", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    assert "checkpoint.pt" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and (tmp_path / "run" / "samples").is_dir()


def test_train_on_an_unlabelled_store_is_one_line(tmp_path, capsys):
    from bioaug.store import StoreHeader, StoreWriter

    writer = StoreWriter(tmp_path / "store", StoreHeader(patch_size=32, mpp=0.5, class_names=[]))
    writer.write_shard("a", np.zeros((3, 32, 32, 3), np.uint8), [{"slide": "a"}] * 3, input_key="a")
    writer.finalize()
    run_bad(capsys, ["train", str(tmp_path / "store"), "--out", str(tmp_path / "run")], tmp_path / "run", "store")


# -- verify, usage errors, file-system errors -------------------------------------------------------------------

def test_verify_passes_a_sound_store_and_names_a_changed_shard(disc_store, tmp_path, capsys):
    assert main(["verify", str(disc_store.path), "--quiet"]) == 0
    assert f"{len(disc_store)} patches verified" in capsys.readouterr().out
    shard = sorted((disc_store.path / "shards").iterdir())[1]
    images = np.load(shard / "images.npy", mmap_mode="r+")
    images[:] = 0
    images.flush()
    del images
    line = run_bad(capsys, ["verify", str(disc_store.path), "--quiet"], tmp_path / "nothing", shard.name)
    assert "images.npy does not match the SHA-256" in line


@pytest.mark.parametrize("argv, fragment", [
    (["tile"], "the following arguments are required"),
    (["tile", "x.svs", "--out", "s", "--workers", "2.5"], "--workers"),
    (["frobnicate"], "invalid choice"),
], ids=["missing arguments", "float for an integer flag", "unknown command"])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    assert main(argv) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith("bioaug: error: ") and fragment in captured.err


def test_help_still_exits_0(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0 and "verify" in capsys.readouterr().out


def test_third_party_log_lines_do_not_get_the_bioaug_prefix(tmp_path):
    code = ("import logging, sys; from bioaug.cli import main, _configure_logging; _configure_logging(); "
            "logging.getLogger('bioaug').warning('ours'); logging.getLogger('other').warning('theirs')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.splitlines() == ["bioaug: WARNING: ours", "theirs"]


# -- the README stays true to the options ---------------------------------------------------------------------

def test_readme_synopses_are_the_generated_ones():
    """Each marked synopsis block in README.md is what `make readme` generates from the options and defaults."""
    from pathlib import Path

    from bioaug.cli import _SYNOPSIS_MARK, render_synopses

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [match["command"] for match in _SYNOPSIS_MARK.finditer(readme)]
    assert {"tile", "train", "augment", "evaluate", "verify"} <= set(commands), commands
    assert render_synopses(readme) == readme, "README synopses drifted from the options: run `make readme`"


def test_synopsis_shows_defaults_choices_and_metavars():
    from bioaug.cli import synopsis

    line = synopsis("train", ["--steps", "--device", "--batch-size", "--ada", "--betas", "--new"])
    assert line.replace(" \\\n    ", " ") == ("bioaug train STORE --out RUN [--steps 20000] [--device auto|cpu|cuda] "
                                              "[--batch-size BATCH_SIZE] [--ada true] [--betas 0.0 0.99] [--new]")
    with pytest.raises(KeyError, match="--nope"):
        synopsis("train", ["--nope"])


def test_a_dry_run_without_flags_gives_the_config_defaults(disc_store, tmp_path, capsys):
    from bioaug.config import config_to_dict
    from bioaug.gan import TrainConfig

    assert main(["train", str(disc_store.path), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == config_to_dict(TrainConfig().resolve(disc_store.patch_size))
