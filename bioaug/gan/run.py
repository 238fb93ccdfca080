"""The GAN run directory: the one place that names its files and reads them.

``bioaug train`` writes it (rank 0 only); ``bioaug augment``, ``bioaug evaluate`` and the benchmarks read it::

    config.json              resolved config and provenance: store path and content hash, classes, patch size,
                             the store's slides, seed, devices, package versions
    checkpoint.pt            latest full training state (see bioaug.gan.checkpoint), replaced atomically
    log.jsonl                append-only; one JSON object per line: run events and, every log_every steps,
                             losses (and the LeCam and reconstruction terms when on), discriminator scores,
                             augment p, ADA r_t, images per wall and per CPU second; per-class diversity at
                             snapshots
    samples/step-NNNNNN.png  EMA samples at every snapshot, fixed latents, one row per class
    reals.png                real patches in the same layout, written when a run starts
    scorers/                 classifiers ``bioaug augment`` trained for selection and audit, kept for reuse

Free of torch until a checkpoint is loaded, so the command line and the evaluation's planning stay light.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..provenance import sha256_file

CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
SAMPLES_DIR = "samples"
REALS_NAME = "reals.png"
#: Folder of trained selection/audit classifiers, one file per real store and classifier config.
SCORERS_DIR = "scorers"


class RunDirectory:
    """A GAN run directory: where each of its files is, and reading them.

    ``checkpoint`` is ``path/checkpoint.pt`` unless the run was given by a checkpoint file of another name
    (:meth:`of`), whose run's other files lie beside it.
    """

    def __init__(self, path: str | Path, *, checkpoint: str | Path | None = None) -> None:
        self.path = Path(path)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else self.path / CHECKPOINT_NAME

    @classmethod
    def of(cls, run: str | Path) -> RunDirectory:
        """The run of ``run``, given as its directory or as its checkpoint file."""
        run = Path(run)
        return cls(run) if run.is_dir() else cls(run.parent, checkpoint=run)

    @classmethod
    def open(cls, run: str | Path) -> RunDirectory:
        """:meth:`of` an existing path; ``CheckpointError`` when there is nothing at ``run``."""
        if not Path(run).exists():
            raise CheckpointError(run, "no such run directory or checkpoint file")
        return cls.of(run)

    # -- where each file is ------------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def log_file(self) -> Path:
        return self.path / LOG_NAME

    @property
    def reals_file(self) -> Path:
        return self.path / REALS_NAME

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    @property
    def scorers_dir(self) -> Path:
        return self.path / SCORERS_DIR

    def sample_grid(self, step: int) -> Path:
        """Where the sample grid of ``step`` is written."""
        return self.samples_dir / f"step-{step:06d}.png"

    def clear(self) -> None:
        """Remove what an earlier run left (record, checkpoint, log, grids), so a new run starts clean; trained
        scorers stay, since their key holds everything they depend on."""
        for path in (self.config_file, self.checkpoint, self.log_file, self.reals_file):
            path.unlink(missing_ok=True)
        for grid in self.samples_dir.glob("step-*.png"):
            grid.unlink()

    # -- reading and appending --------------------------------------------------------------------------------

    def read_record(self) -> dict[str, Any]:
        """The run record (``config.json``); ``CheckpointError`` when there is none or it is not valid JSON."""
        if not self.config_file.is_file():
            raise CheckpointError(self.path, f"no {CONFIG_NAME}: not a run directory written by bioaug train")
        try:
            return json.loads(self.config_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(self.config_file, f"run record is not valid JSON ({exc.msg})") from None

    def training_store(self) -> tuple[str, str] | None:
        """(path, content hash) of the store the run trained on, as its record names them; None when it names
        no store (the hash is empty when only the path was recorded)."""
        inputs = self.read_record().get("inputs", {})
        if "store" not in inputs:
            return None
        return inputs["store"], inputs.get("store_sha256", "")

    def read_log(self) -> list[dict[str, Any]]:
        """Every record of ``log.jsonl``, in order."""
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def append_log(self, record: dict[str, Any]) -> None:
        """Add one record to ``log.jsonl``."""
        with open(self.log_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def load_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's full training state (:func:`bioaug.gan.checkpoint.load_checkpoint`)."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint)

    def checkpoint_sha256(self) -> str:
        """SHA-256 of the checkpoint file: what identifies the trained generator in records and keys."""
        return sha256_file(self.checkpoint)
