"""Train a MONAI classifier on patches: class-balanced loss, optional classic augmentation, seeded.

Images go in as (N, H, W, 3) uint8 arrays, exactly what ``PatchStore.images`` returns, and are scaled to
[0, 1] like ``PatchDataset``. Training is deterministic for a seed on CPU; on CUDA it uses mixed precision.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from tqdm.auto import tqdm

from ..config import option
from ..errors import ConfigError
from .networks import NETWORKS, build_network

AUGMENTATIONS = ("none", "classic")


@dataclass
class ClassifierConfig:
    """How the downstream classifier is trained; one instance per evaluation run."""

    network: str = option("resnet18", "MONAI network", choices=tuple(NETWORKS))
    epochs: int = option(12, "maximum number of training epochs")
    batch_size: int = option(64, "patches per optimisation step")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    patience: int = option(0, "stop after this many epochs without a better validation balanced accuracy and "
                              "keep the best epoch; 0 trains all epochs and keeps the last")
    seed: int = option(0, "seed for initialisation, batch order and augmentation")
    augmentation: str = option("none", "training-time augmentation", choices=AUGMENTATIONS)

    def validate(self) -> None:
        """Reject impossible values before any training starts."""
        if self.network not in NETWORKS:
            raise ConfigError("network", f"unknown network {self.network!r}; valid: {', '.join(NETWORKS)}")
        if self.augmentation not in AUGMENTATIONS:
            raise ConfigError("augmentation", f"{self.augmentation!r} is not one of {', '.join(AUGMENTATIONS)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.patience < 0:
            raise ConfigError("classifier", "lr must be > 0, weight_decay and patience >= 0")


def classic_augmentation(seed: int) -> Callable[..., dict[str, Any]]:
    """The 'classic' arm: flips, 90° rotations, H&E stain jitter, blur and brightness/contrast, seeded.

    Applied to one (H, W, 3) uint8 image at a time as ``transform(image=image)["image"]``.
    """
    import albumentations as A

    if not hasattr(A, "HEStain"):
        raise ConfigError("augmentation", "classic augmentation needs albumentations >= 2.0 (for HEStain)")
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.HEStain(method="random_preset", p=0.5),
        A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.1, 1.0), p=0.2),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ], seed=seed)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``N / (K * count)`` so every present class weighs the same in the loss.

    Classes absent from ``labels`` get weight 0 (they contribute no terms anyway).
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def _default_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _check_images(images: np.ndarray, labels: np.ndarray | None, what: str) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(what, f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    if labels is not None and len(labels) != len(images):
        raise ConfigError(what, f"{len(labels)} labels for {len(images)} images")
    if labels is not None and len(labels) and labels.min() < 0:
        raise ConfigError(what, "unlabelled patches (label -1) cannot train a classifier")


def train_classifier(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray | None,
                     val_labels: np.ndarray | None, n_classes: int, config: ClassifierConfig, *,
                     extra: tuple[np.ndarray, np.ndarray] | None = None,
                     device: str | torch.device | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``config.network`` on real patches (plus ``extra``, e.g. synthetic ones) and return it in eval mode.

    Parameters
    ----------
    train_images, train_labels
        Real training patches, (N, H, W, 3) uint8, and their class indices.
    val_images, val_labels
        Validation patches from slides disjoint from training, or None for a fixed epoch budget. Balanced
        accuracy on them is logged every epoch and, with ``config.patience > 0``, selects the epoch kept.
    n_classes
        Number of output classes (the store's class count, even if some are absent here).
    config
        Network, schedule, seed and augmentation.
    extra
        Additional (images, labels) mixed into every training epoch; augmentation applies to them too.
    device
        Defaults to CUDA when available (with mixed precision), else CPU.

    Seeds torch's global generator with ``config.seed`` (network initialisation), so two calls with the same
    inputs and config give the same weights on CPU.

    Returns
    -------
    model, history
        The trained network (eval mode) and a JSON-ready dict: per-epoch ``epochs`` records (loss, validation
        balanced accuracy, seconds), ``best_epoch``, ``stopped_early``, ``class_weights``, ``n_train``.
    """
    config.validate()
    images, labels = train_images, np.asarray(train_labels, dtype=np.int64)
    if extra is not None:
        images = np.concatenate([images, extra[0]])
        labels = np.concatenate([labels, np.asarray(extra[1], dtype=np.int64)])
    _check_images(images, labels, "training patches")
    if len(images) == 0:
        raise ConfigError("training patches", "no training patches")
    validating = val_images is not None and val_labels is not None and len(val_images) > 0
    if validating:
        _check_images(val_images, np.asarray(val_labels), "validation patches")

    device = _default_device(device)
    use_amp = device.type == "cuda"
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    augment = classic_augmentation(config.seed) if config.augmentation == "classic" else None
    model = build_network(config.network, n_classes).to(device)
    weights = class_weights(labels, n_classes)
    loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32, device=device))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    history: dict[str, Any] = {"epochs": [], "best_epoch": 0, "stopped_early": False,
                               "class_weights": weights.tolist(), "n_train": int(len(images))}
    best_score, best_state, since_best = -np.inf, None, 0
    for epoch in tqdm(range(1, config.epochs + 1), desc=f"train {config.network}", unit="epoch", disable=None):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(len(images))
        total_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            if len(batch) < 2 and len(order) > 1:
                continue  # batch norm cannot train on a single sample
            batch_images = images[batch]
            if augment is not None:
                batch_images = np.stack([augment(image=image)["image"] for image in batch_images])
            inputs = _to_tensor(batch_images, device)
            targets = torch.from_numpy(labels[batch]).to(device)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model(inputs), targets)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total_loss += float(loss.detach()) * len(batch)
        precise_batch_norm(model, images[order[:PRECISE_BN_IMAGES]], batch_size=config.batch_size, device=device)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": total_loss / len(order)}
        if validating:
            predicted = predict_proba(model, val_images, batch_size=config.batch_size, device=device).argmax(1)
            record["val_balanced_accuracy"] = float(balanced_accuracy_score(val_labels, predicted))
        record["seconds"] = time.perf_counter() - started
        history["epochs"].append(record)
        if not (validating and config.patience):
            continue
        if record["val_balanced_accuracy"] > best_score:
            best_score, since_best = record["val_balanced_accuracy"], 0
            best_state, history["best_epoch"] = copy.deepcopy(model.state_dict()), epoch
        else:
            since_best += 1
            if since_best >= config.patience:
                history["stopped_early"] = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    if not (validating and config.patience):
        history["best_epoch"] = len(history["epochs"])
    return model.eval(), history


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
    device = _default_device(device)
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            if len(images) - start > 1:  # a single sample has no batch statistics
                model(_to_tensor(images[start:start + batch_size], device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _batched(model: nn.Module, images: np.ndarray, batch_size: int, device: str | torch.device | None,
             run: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Apply ``run`` to ``images`` in eval mode, batch by batch, without gradients; concatenated as float64."""
    device = _default_device(device)
    model.eval()
    outputs = []
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16,
                                         enabled=device.type == "cuda"):
        for start in range(0, len(images), batch_size):
            outputs.append(run(_to_tensor(images[start:start + batch_size], device)).float().cpu().numpy())
    return np.concatenate(outputs).astype(np.float64)


def predict_proba(model: nn.Module, images: np.ndarray, *, batch_size: int = 256,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Class probabilities (N, n_classes) for (N, H, W, 3) uint8 patches (softmax of the logits)."""
    model.to(_default_device(device))
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
    model.to(_default_device(device))

    def features(batch: torch.Tensor) -> torch.Tensor:
        captured.clear()
        model(batch)
        return captured[0].flatten(1)

    try:
        return _batched(model, images, batch_size, device, features)
    finally:
        hook.remove()


def state_dict_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of a model's parameters and buffers, to record which feature network a metric used."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
