"""Train a MONAI classifier on patches for a fixed number of optimiser steps: class-balanced, seeded.

Images go in as (N, H, W, 3) uint8 arrays, exactly what ``PatchStore.images`` returns, and are scaled to
[0, 1] like ``PatchDataset``. Every run takes ``steps`` optimiser steps (linear warm-up, then cosine decay)
whatever the size of its training set, so arms that add synthetic or pseudo-labelled patches get the same
optimisation budget as real-only training; those extra patches fill a fixed share of every batch
(``extra_fraction``) instead of lengthening an epoch. Deterministic for a seed on CPU; mixed precision on CUDA.
"""
from __future__ import annotations

import copy
import hashlib
import math
import pickle
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from ..devices import resolve_device
from ..errors import CheckpointError, ConfigError
from ..progress import progress_bar
from ..provenance import atomic_path
from .recipes import build_augmentation
from .config import ClassifierConfig
from .model import PatchClassifier, centre_crop, without_tta


#: Exponent of the class frequency in the loss weights of each ``class_weighting``.
WEIGHTING_POWERS = {"inverse": 1.0, "sqrt": 0.5, "none": 0.0}


def _draw_frequency(labels: np.ndarray, n_classes: int, sampler: str) -> np.ndarray:
    """Class distribution of patches drawn from ``labels``: as they are, or every present class alike."""
    counts = np.bincount(labels, minlength=n_classes)
    if sampler == "balanced":
        return (counts > 0) / max((counts > 0).sum(), 1)
    return counts / max(len(labels), 1)


def batch_class_frequency(labels: np.ndarray, extra_labels: np.ndarray | None, extra_fraction: float,
                          n_classes: int, sampler: str = "uniform", extra_sampler: str = "uniform") -> np.ndarray:
    """The expected class distribution of the batches drawn: real patches (uniformly, or every present class
    equally often with the ``balanced`` sampler) mixed with ``extra_fraction`` extra patches (likewise)."""
    frequency = _draw_frequency(labels, n_classes, sampler)
    if extra_labels is not None and len(extra_labels) and extra_fraction > 0:
        extra = _draw_frequency(extra_labels, n_classes, extra_sampler)
        frequency = (1 - extra_fraction) * frequency + extra_fraction * extra
    return frequency


def mixture_class_weights(labels: np.ndarray, extra_labels: np.ndarray | None, extra_fraction: float,
                          n_classes: int, weighting: str = "inverse", sampler: str = "uniform",
                          extra_sampler: str = "uniform") -> np.ndarray:
    """Loss weights ``(K p_c)^-power`` for the class frequencies ``p_c`` of the batches actually drawn.

    Batches hold ``1 - extra_fraction`` real and ``extra_fraction`` extra patches, so the expected class
    distribution mixes the two sets' distributions (``batch_class_frequency``). ``inverse`` (power 1) makes
    every present class weigh the same in the loss, ``sqrt`` halfway, ``none`` leaves the frequencies as they
    are. Classes absent from both get weight 0 (they contribute no terms anyway).
    """
    frequency = batch_class_frequency(labels, extra_labels, extra_fraction, n_classes, sampler, extra_sampler)
    return frequency_weights(frequency, weighting)


def frequency_weights(frequency: np.ndarray, weighting: str) -> np.ndarray:
    """Loss weights ``(K p_c)^-power`` of class frequencies ``frequency`` (0 for absent classes)."""
    present = frequency > 0
    weights = np.zeros(len(frequency))
    weights[present] = (present.sum() * frequency[present]) ** -WEIGHTING_POWERS[weighting]
    return weights


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``N / (K * count)`` of one label set (0 for absent classes)."""
    return mixture_class_weights(np.asarray(labels, dtype=np.int64), None, 0.0, n_classes)


def learned_prior(frequency: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The class prior a network trained with ``weights`` on batches of class ``frequency`` fits: their product,
    normalised (uniform under inverse weighting, so logit adjustment then changes nothing)."""
    prior = frequency * weights
    return prior / prior.sum() if prior.sum() > 0 else np.full(len(prior), 1 / len(prior))


def lr_factor(step: int, steps: int, warmup_fraction: float) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up to 1, then cosine decay towards 0."""
    warmup = int(round(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class _BalancedStream:
    """Endless seeded sampling of indices with every present class equally likely at each draw."""

    def __init__(self, labels: np.ndarray, rng: np.random.Generator) -> None:
        self.classes = np.unique(labels)
        self.members = [np.flatnonzero(labels == c) for c in self.classes]
        self.streams = [_Stream(len(members), rng) for members in self.members]
        self.rng = rng

    @property
    def passes(self) -> int:
        """Passes over the largest class (the smaller ones are cycled more often)."""
        return min(stream.passes for stream in self.streams) if self.streams else 0

    def take(self, count: int) -> np.ndarray:
        picks = np.bincount(self.rng.integers(0, len(self.classes), size=count), minlength=len(self.classes))
        return np.concatenate([members[stream.take(n)] for members, stream, n in
                               zip(self.members, self.streams, picks)] or [np.zeros(0, np.int64)])


class _Stream:
    """Endless seeded sampling without replacement: one permutation per pass over ``n`` items."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng, self.order, self.position, self.passes = n, rng, np.zeros(0, np.int64), 0, 0

    def take(self, count: int) -> np.ndarray:
        taken = []
        while count > 0:
            if self.position >= len(self.order):
                self.order, self.position, self.passes = self.rng.permutation(self.n), 0, self.passes + 1
            chunk = self.order[self.position:self.position + count]
            self.position += len(chunk)
            count -= len(chunk)
            taken.append(chunk)
        return np.concatenate(taken) if taken else np.zeros(0, np.int64)


def batch_composition(batch_size: int, extra_fraction: float, has_extra: bool) -> tuple[int, int]:
    """(real, extra) patches per batch: ``round(extra_fraction * batch_size)`` extra ones when there are any."""
    extra = int(round(extra_fraction * batch_size)) if has_extra else 0
    return batch_size - extra, extra


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _viewed(images: np.ndarray, view: int, what: str) -> np.ndarray:
    """The central ``view`` pixels of every patch: what the network trains on (the crop costs nothing later)."""
    if images.shape[1] < view or images.shape[2] < view:
        raise ConfigError(what, f"{images.shape[1]} px patches are smaller than the classifier's {view} px view")
    return centre_crop(images, view)


def _check_images(images: np.ndarray, labels: np.ndarray | None, what: str) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(what, f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    if labels is not None and len(labels) != len(images):
        raise ConfigError(what, f"{len(labels)} labels for {len(images)} images")
    if labels is not None and len(labels) and labels.min() < 0:
        raise ConfigError(what, "unlabelled patches (label -1) cannot train a classifier")


def train_classifier(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray | None,
                     val_labels: np.ndarray | None, n_classes: int, config: ClassifierConfig, *,
                     extra: tuple[np.ndarray, np.ndarray] | None = None, extra_fraction: float = 0.0,
                     device: str | torch.device | None = None,
                     progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``config.network`` for ``config.steps`` steps on real patches (plus ``extra``) and return it.

    Parameters
    ----------
    train_images, train_labels
        Real training patches, (N, H, W, 3) uint8, and their class indices.
    val_images, val_labels
        Validation patches from slides disjoint from training, or None. Used only with ``config.patience``
        > 0: balanced accuracy on them every ``eval_every`` steps selects the weights kept.
    n_classes
        Number of output classes (the store's class count, even if some are absent here).
    config
        Network, schedule, seed and augmentation.
    extra, extra_fraction
        Additional (images, labels), e.g. synthetic or pseudo-labelled patches, filling ``extra_fraction`` of
        every batch; augmentation applies to them too. The number of steps does not change.
    device
        Defaults to CUDA when available (with mixed precision), else CPU.
    progress
        Progress over steps (a bar on a terminal, log lines elsewhere; ``--quiet`` silences both).

    Seeds torch's global generator with ``config.seed`` (network initialisation), so two calls with the same
    inputs and config give the same weights on CPU.

    Returns
    -------
    model, history
        The trained network (eval mode) and a JSON-ready dict: ``steps``, ``batch`` ({"real": n, "extra": n}
        per batch), ``passes`` over each set, ``log`` (mean loss, learning rate and, with validation, balanced
        accuracy per interval), ``best_step``, ``stopped_early``, ``class_weights``, ``n_train``, ``n_extra``.
    """
    config.validate()
    if not 0 <= extra_fraction <= 1:
        raise ConfigError("synthetic_fraction", f"must lie in [0, 1], got {extra_fraction}")
    labels = np.asarray(train_labels, dtype=np.int64)
    _check_images(train_images, labels, "training patches")
    has_extra = extra is not None and len(extra[0]) > 0 and extra_fraction > 0
    extra_images, extra_labels = (extra[0], np.asarray(extra[1], dtype=np.int64)) if has_extra else (None, None)
    if has_extra:
        _check_images(extra_images, extra_labels, "extra training patches")
    n_real, n_extra = batch_composition(config.batch_size, extra_fraction, has_extra)
    if n_real and not len(train_images):
        raise ConfigError("training patches", "no training patches")
    validating = bool(config.patience) and val_images is not None and val_labels is not None and len(val_images)
    if validating:
        _check_images(val_images, np.asarray(val_labels), "validation patches")

    device = resolve_device(device)
    use_amp = device.type == "cuda"
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    view = config.view or train_images.shape[1]
    train_images = _viewed(train_images, view, "training patches")
    extra_images = _viewed(extra_images, view, "extra training patches") if has_extra else None
    real_stream = (_BalancedStream(labels, rng) if config.sampler == "balanced" else _Stream(len(train_images), rng))
    extra_stream = (_BalancedStream(extra_labels, rng) if has_extra and config.extra_sampler == "balanced"
                    else _Stream(len(extra_images) if has_extra else 0, rng))
    transform = build_augmentation(config.augmentation, config.seed)
    model = PatchClassifier(config, n_classes).to(device)
    share = n_extra / config.batch_size
    frequency = batch_class_frequency(labels, extra_labels, share, n_classes, config.sampler, config.extra_sampler)
    weights = frequency_weights(frequency, config.class_weighting)
    model.set_prior(learned_prior(frequency, weights))
    loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32, device=device))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, config.steps, config.warmup_fraction))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    history: dict[str, Any] = {"steps": config.steps, "batch": {"real": n_real, "extra": n_extra}, "log": [],
                               "best_step": config.steps, "stopped_early": False, "class_weights": weights.tolist(),
                               "prior": learned_prior(frequency, weights).tolist(),
                               "n_train": int(len(train_images)), "n_extra": int(len(extra_images)) if has_extra else 0}
    interval = config.eval_every if validating else max(config.steps // 10, 1)
    best_score, best_state, since_best, losses = -np.inf, None, 0, []
    started = time.perf_counter()
    model.train()
    bar = progress_bar(range(config.steps), desc=f"train {config.network}", unit="step", disable=not progress)
    for step in bar:
        real = real_stream.take(n_real)
        batch_images, batch_labels = train_images[real], labels[real]
        if n_extra:
            chosen = extra_stream.take(n_extra)
            batch_images = np.concatenate([batch_images, extra_images[chosen]])
            batch_labels = np.concatenate([batch_labels, extra_labels[chosen]])
        if transform is not None:
            batch_images = np.stack([transform(image=image)["image"] for image in batch_images])
        inputs = _to_tensor(batch_images, device)
        targets = torch.from_numpy(batch_labels).to(device)
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            loss = loss_fn(model(inputs), targets)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        schedule.step()
        losses.append(float(loss.detach()))
        if (step + 1) % interval and step + 1 < config.steps:
            continue
        record: dict[str, Any] = {"step": step + 1, "train_loss": float(np.mean(losses)),
                                  "lr": float(optimiser.param_groups[0]["lr"]),
                                  "seconds": round(time.perf_counter() - started, 2)}
        losses = []
        if validating:
            precise_batch_norm(model, _bn_images(train_images, extra_images, n_real, n_extra, rng),
                               batch_size=config.batch_size, device=device)
            predicted = predict_proba(model, val_images, batch_size=config.batch_size, device=device).argmax(1)
            record["val_balanced_accuracy"] = float(balanced_accuracy_score(val_labels, predicted))
            model.train()
            if record["val_balanced_accuracy"] > best_score:
                best_score, since_best = record["val_balanced_accuracy"], 0
                best_state, history["best_step"] = copy.deepcopy(model.state_dict()), step + 1
            else:
                since_best += 1
        history["log"].append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}")
        if validating and since_best >= config.patience:
            history["stopped_early"] = step + 1 < config.steps
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        precise_batch_norm(model, _bn_images(train_images, extra_images, n_real, n_extra, rng),
                           batch_size=config.batch_size, device=device)
    history["passes"] = {"real": real_stream.passes, "extra": extra_stream.passes}
    history["steps_run"] = history["log"][-1]["step"] if history["log"] else 0
    return model.eval(), history


def _bn_images(images: np.ndarray, extra: np.ndarray | None, n_real: int, n_extra: int,
               rng: np.random.Generator) -> np.ndarray:
    """Up to ``PRECISE_BN_IMAGES`` patches mixed as the training batches are, for batch-norm statistics."""
    total = min(PRECISE_BN_IMAGES, len(images) + (len(extra) if extra is not None else 0))
    share = n_extra / (n_real + n_extra)
    take_extra = min(int(round(share * total)), len(extra)) if extra is not None and n_extra else 0
    take_real = min(total - take_extra, len(images))
    parts = [images[np.sort(rng.permutation(len(images))[:take_real])]]
    if take_extra:
        parts.append(extra[np.sort(rng.permutation(len(extra))[:take_extra])])
    return np.concatenate(parts)


PRECISE_BN_IMAGES = 4096


def precise_batch_norm(model: nn.Module, images: np.ndarray, *, batch_size: int,
                       device: str | torch.device | None = None) -> None:
    """Recompute batch-norm running statistics as exact averages over ``images`` with the current weights.

    With few optimisation steps (small label budgets) the exponential running averages lag the weights so far
    that eval-mode predictions collapse to one class while train-mode ones are right; averaging over one
    pass with frozen weights ("precise BN", Wu & Johnson 2021) removes that lag.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    device = resolve_device(device)
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            if len(images) - start > 1:  # a single sample has no batch statistics
                model(_to_tensor(images[start:start + batch_size], device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _batched(model: nn.Module, images: np.ndarray, batch_size: int, device: str | torch.device | None,
             run: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Apply ``run`` to ``images`` in eval mode, batch by batch, without gradients; concatenated as float64.

    No images give an empty (0, width) array, the width found from one blank patch (an empty unlabelled pool,
    as at a budget that labels every training slide, is a normal case).
    """
    device = resolve_device(device)
    model.eval()
    size = model.input_size(images.shape[1]) if isinstance(model, PatchClassifier) else images.shape[1]
    outputs = []
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16,
                                         enabled=device.type == "cuda"):
        for start in range(0, len(images), batch_size):
            batch = centre_crop(images[start:start + batch_size], size)
            outputs.append(run(_to_tensor(batch, device)).float().cpu().numpy())
        if not outputs:
            blank = np.zeros((1, *images.shape[1:]), dtype=np.uint8)
            return np.zeros((0, run(_to_tensor(centre_crop(blank, size), device)).shape[1]))
    return np.concatenate(outputs).astype(np.float64)


def predict_proba(model: nn.Module, images: np.ndarray, *, batch_size: int = 256,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Class probabilities (N, n_classes) for (N, H, W, 3) uint8 patches (softmax of the logits)."""
    model.to(resolve_device(device))
    return _batched(model, images, batch_size, device, lambda x: torch.softmax(model(x).float(), dim=1))


def extract_features(model: nn.Module, images: np.ndarray, *, batch_size: int = 256,
                     device: str | torch.device | None = None) -> np.ndarray:
    """Penultimate-layer features (N, D): the input of the network's last linear layer.

    This is the feature space of generator fidelity metrics (Fréchet distance, KID, k-NN precision/recall),
    a classifier trained here on real patches instead of a downloaded Inception network.
    """
    heads = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not heads:
        raise ConfigError(type(model).__name__, "network has no linear layer to take features from")
    captured: list[torch.Tensor] = []
    hook = heads[-1].register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
    model.to(resolve_device(device))

    def features(batch: torch.Tensor) -> torch.Tensor:
        captured.clear()
        model(batch)
        return captured[0].flatten(1)

    try:
        with without_tta(model):
            return _batched(model, images, batch_size, device, features)
    finally:
        hook.remove()


def save_classifier(model: nn.Module, path: Path) -> None:
    """Write ``model``'s weights to ``path`` atomically (a killed run never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def load_classifier(path: Path, config: ClassifierConfig, n_classes: int) -> nn.Module:
    """The classifier of ``config`` (its network, view, marker, TTA) with the weights saved at ``path``, in eval mode.

    Loaded with ``weights_only=True``; an unreadable or mismatched file is a one-line ``CheckpointError``.
    """
    model = PatchClassifier(config, n_classes)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(path, f"unreadable classifier weights ({type(exc).__name__}); delete the file to "
                                    "retrain") from None
    return model.eval()


def state_dict_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of a model's parameters and buffers, to record which feature network a metric used."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
