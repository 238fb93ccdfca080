"""The progress helper: a bar on a terminal, log lines at a steady interval elsewhere, silence when quiet."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from tqdm import tqdm

from bioaug import progress
from bioaug.progress import LogProgress, is_quiet, progress_bar, set_log_interval, set_quiet


@pytest.fixture(autouse=True)
def reset_progress_state():
    set_quiet(False)
    yield
    set_quiet(False)
    set_log_interval(None)


class _Terminal:
    """A stand-in stderr that says it is a terminal and swallows what tqdm draws."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_off_a_terminal_lines_are_logged_with_count_rate_eta_and_postfix(caplog):
    set_log_interval(0)
    caplog.set_level(logging.INFO, logger="bioaug")
    with progress_bar(total=4, desc="train", unit="step") as bar:
        assert isinstance(bar, LogProgress)
        for _ in range(4):
            bar.update(1)
            bar.set_postfix({"D": "0.812"})
    lines = [r.getMessage() for r in caplog.records if r.name == "bioaug.progress"]
    assert len(lines) == 5, lines  # one per update, then the closing line
    assert lines[1].startswith("train: 2/4 step (50%), ") and "step/s" in lines[1] and "ETA" in lines[1]
    assert lines[1].endswith("D=0.812")
    assert "done in" in lines[-1] and lines[-1].startswith("train: 4/4 step (100%)")


def test_iteration_counts_items_and_a_short_loop_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="bioaug")
    set_log_interval(3600)
    assert list(progress_bar(range(5), desc="chunks")) == [0, 1, 2, 3, 4]
    assert not [r for r in caplog.records if r.name == "bioaug.progress"]
    set_log_interval(0)
    assert sum(progress_bar(range(3), desc="chunks")) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "bioaug.progress"]
    assert lines[0].startswith("chunks: 1/3 it") and lines[-1].startswith("chunks: 3/3 it")


def test_quiet_and_disable_silence_the_log(caplog):
    set_log_interval(0)
    caplog.set_level(logging.INFO, logger="bioaug")
    set_quiet(True)
    with progress_bar(total=3, desc="quiet") as bar:
        bar.update(3)
    set_quiet(False)
    with progress_bar(total=3, desc="disabled", disable=True) as bar:
        bar.update(3)
    assert not [r for r in caplog.records if r.name == "bioaug.progress"]


def test_on_a_terminal_it_is_a_tqdm_bar_and_quiet_disables_it(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = progress_bar(total=10, desc="tiling", unit="region", initial=2)
    assert isinstance(bar, tqdm) and not bar.disable and bar.n == 2
    bar.close()
    set_quiet(True)
    bar = progress_bar(total=10)
    assert bar.disable
    bar.close()


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BIOAUG_PROGRESS_INTERVAL", "7.5")
    assert progress.log_interval() == 7.5
    set_log_interval(2)
    assert progress.log_interval() == 2


def test_a_non_terminal_cli_run_logs_progress_lines(tmp_path):
    """`bioaug train` with stderr to a pipe: progress arrives as log lines; with --quiet there are none."""
    from conftest import make_disc_store

    store = make_disc_store(tmp_path / "store", per_class=8)
    env = {"BIOAUG_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "bioaug.cli", "train", str(store.path), "--steps", "3", "--batch-size", "6",
               "--channels", "8", "--max-channels", "16", "--z-dim", "8", "--device", "cpu", "--log-every", "1"]
    loud = subprocess.run(command + ["--out", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    assert loud.returncode == 0, loud.stderr
    lines = [line for line in loud.stderr.splitlines() if line.startswith("bioaug: INFO: train: ")]
    assert len(lines) >= 3 and "step/s" in lines[0] and "ETA" in lines[0], loud.stderr
    quiet = subprocess.run(command + ["--out", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True,
                           env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "train: " not in quiet.stderr


def test_the_command_line_restores_the_quiet_setting_of_its_caller(tmp_path):
    from bioaug.cli import main

    assert main(["verify", str(tmp_path / "no-store"), "--quiet"]) == 2
    assert not is_quiet()
