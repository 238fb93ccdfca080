"""Training checkpoints: the full state of a run, written atomically and read without unpickling objects.

A checkpoint is a dict of tensors and plain Python values, loadable with ``torch.load(path,
weights_only=True)``::

    format          "bioaug.gan.checkpoint/1"
    step            completed training steps
    generator, discriminator, generator_ema   state dicts
    optimizer_g, optimizer_d                  state dicts (Adam moments and step counts)
    augment_p       current DiffAugment probability (named before the option became ``diffaugment_p``; the key
                    stays, so that every checkpoint written so far still loads)
    augment_signs   ADA sums since the last adjustment (sum of signs, count), over all ranks
    rng             one entry per rank: {"torch", "cuda" (or None), "numpy", "python"} generator states
    config          the resolved TrainConfig as a dict
    class_names, patch_size, store_sha256, world_size
    lecam_state     LeCam's moving averages of D(real), D(fake) and their update count (zeros before LeCam)
    train_seconds   training time so far, over resumes, on the ``budget_clock`` (what ``time_budget`` counts; 0
                    before it existed)

Checkpoints written before an option existed are read as trained with that option's setting of the time
(:data:`LEGACY_OPTIONS`: the plain networks, no LeCam, unlabelled rows ignored), and options since renamed
under their new names (:data:`RENAMED_OPTIONS`).
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import config_to_dict
from ..errors import CheckpointError
from ..provenance import atomic_path
from ..store import PatchStore
from .config import TrainConfig

FORMAT = "bioaug.gan.checkpoint/1"
REQUIRED_KEYS = ("step", "generator", "discriminator", "generator_ema", "optimizer_g", "optimizer_d",
                 "augment_p", "augment_signs", "rng", "config", "class_names", "patch_size", "store_sha256",
                 "world_size")
#: Options added after the first checkpoints, with the value those checkpoints were trained with.
LEGACY_OPTIONS = {"preset": "plain", "lecam": 0.0, "lecam_decay": 0.99, "unlabelled": "ignore",
                  "unlabelled_fraction": 0.5, "time_budget": 0.0, "budget_clock": "wall"}
#: Options renamed since the first checkpoints: old name -> the TrainConfig field that holds it now.
RENAMED_OPTIONS = {"augment": "diffaugment", "augment_p": "diffaugment_p"}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to a temporary file beside ``path``, flush it to disk and rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": FORMAT, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True``.

    Raises ``CheckpointError`` naming the file when it is missing, truncated, corrupt, holds anything but
    tensors and plain values, or is not a bioaug GAN checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no checkpoint at this path")
    try:
        with warnings.catch_warnings():  # a damaged file gets one error line, not torch's warnings as well
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        raise CheckpointError(path, _load_problem(exc)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(path, f"not a bioaug GAN checkpoint (format {FORMAT!r} expected)")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(path, f"checkpoint is missing {missing[0]!r}")
    state["config"] = {**LEGACY_OPTIONS,
                       **{RENAMED_OPTIONS.get(name, name): value for name, value in state["config"].items()}}
    state.setdefault("lecam_state", torch.zeros(3))
    state.setdefault("train_seconds", 0.0)
    return state


def _load_problem(exc: Exception) -> str:
    """What ``torch.load(weights_only=True)`` found wrong, in a few words instead of torch's advice to load
    the file unsafely (its 'In PyTorch 2.6 ...' note)."""
    text = str(exc)
    if "Weights only load failed" in text:
        hostile = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)
        if hostile:
            return (f"holds a Python object ({hostile.group(1)}) besides tensors and plain values; refused, "
                    f"because loading it could run code")
        detail = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
        reason = detail.group(1).strip() if detail else "not a torch checkpoint"
    else:
        reason = text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
    return f"corrupt or truncated checkpoint ({reason[:160]})"


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every generator state this process draws from, as tensors and lists that ``weights_only`` accepts.

    On CUDA only the training device's state is taken: asking for every device's would open a context on
    each GPU from every rank.
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(mt_state), gauss_next],
    }


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Put back the generator states :func:`capture_rng` recorded (the CUDA one when training on CUDA)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, mt_state, gauss_next = state["python"]
    random.setstate((version, tuple(mt_state), gauss_next))


def check_resumable(state: dict[str, Any], path: str | Path, store: PatchStore, config: TrainConfig) -> None:
    """Raise ``CheckpointError`` unless ``state`` continues training on ``store`` with ``config``.

    Patch size, classes and store content must be those the checkpoint was trained on, and so must every
    option that shapes the networks or the trajectory (:meth:`TrainConfig.fixed_fields`).
    """
    advice = "pass --new to start over or choose another --out"
    if state["patch_size"] != store.patch_size:
        raise CheckpointError(path, f"trained on {state['patch_size']} px patches but {store.path} has "
                                    f"{store.patch_size} px; {advice}")
    if list(state["class_names"]) != store.class_names:
        raise CheckpointError(path, f"trained on classes {list(state['class_names'])} but {store.path} has "
                                    f"{store.class_names}; {advice}")
    if state["store_sha256"] != store.content_hash:
        raise CheckpointError(path, f"trained on other patches than {store.path} holds (content hash "
                                    f"{state['store_sha256'][:12]} vs {store.content_hash[:12]}); {advice}")
    wanted = config_to_dict(config)
    for name in config.fixed_fields():
        if state["config"].get(name) != wanted[name]:
            raise CheckpointError(path, f"trained with {name}={state['config'].get(name)!r} but this run asks "
                                        f"{wanted[name]!r}; {advice}")
