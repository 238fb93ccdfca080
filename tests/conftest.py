"""Shared fixtures: paths to the real data beside the repo, and a tiny labelled patch store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bioaug.store import PatchStore, StoreHeader, StoreWriter

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Two cores are shared with other work: one torch thread is faster here and keeps timings stable."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test cleanly when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def make_disc_store(path: Path, *, per_class: int = 24, patch_size: int = 32, seed: int = 0,
                    class_names: tuple[str, ...] = ("small", "large", "pale"), slides: int = 4,
                    slide_prefix: str = "slide",
                    kind: str = "real", provenance: dict | None = None) -> PatchStore:
    """A store of pink patches with one purple disc each; the class sets the disc's size and darkness.

    ``kind="synthetic"`` (with e.g. a ``checkpoint_sha256`` in ``provenance``) stands in for a GAN's store."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:patch_size, :patch_size] - (patch_size - 1) / 2
    header = StoreHeader(patch_size=patch_size, mpp=0.5, class_names=list(class_names),
                         kind=kind, feature_names=["area_um2"],
                         provenance={"made_by": "tests.conftest", **(provenance or {})})
    writer = StoreWriter(path, header)
    for slide in range(slides):
        images, rows = [], []
        for label_index, label in enumerate(class_names):
            for _ in range(per_class // slides):
                radius = patch_size * (0.12 + 0.1 * label_index) * rng.uniform(0.85, 1.15)
                darkness = 0.9 - 0.25 * label_index
                image = np.empty((patch_size, patch_size, 3))
                image[:] = (235, 170, 200) + rng.normal(0, 6, (patch_size, patch_size, 3))
                disc = (xx ** 2 + yy ** 2) <= radius ** 2
                image[disc] = image[disc] * (1 - darkness) + np.array([70, 40, 120]) * darkness
                images.append(np.clip(image, 0, 255).astype(np.uint8))
                rows.append({"slide": f"{slide_prefix}{slide}", "x": float(rng.uniform(0, 1000)),
                             "y": float(rng.uniform(0, 1000)), "label": label,
                             "area_um2": float(np.pi * (radius * 0.5) ** 2)})
        writer.write_shard(f"{slide_prefix}{slide}", np.stack(images), rows, input_key=f"disc-{seed}-{slide}")
    return writer.finalize()


@pytest.fixture
def disc_store(tmp_path: Path) -> PatchStore:
    """A finished 3-class store of 72 patches of 32 px over 4 slides."""
    return make_disc_store(tmp_path / "store")


def make_pool_store(path: Path, source: PatchStore, *, rename: dict[str, str] | None = None,
                    hashes: dict[str, str] | None = None, patch_size: int | None = None) -> PatchStore:
    """An unlabelled store of ``source``'s patches, as ``bioaug tile --label-by none`` on its slides gives.

    ``rename`` maps slide names to new ones (a renamed copy), ``hashes`` records slide-file hashes in the
    provenance as tiling does, ``patch_size`` crops every patch (a pool of another patch size)."""
    size = patch_size or source.patch_size
    header = StoreHeader(patch_size=size, mpp=source.mpp, class_names=[], feature_names=["area_um2"],
                         provenance={"made_by": "tests.conftest", "inputs": dict(hashes or {})})
    writer = StoreWriter(path, header)
    for slide in sorted(set(source.slides)):
        chosen = np.flatnonzero(source.slides == slide)
        name = (rename or {}).get(slide, slide)
        rows = [{"slide": name, "x": float(source.manifest["x"][i]), "y": float(source.manifest["y"][i]),
                 "label": "", "area_um2": float(source.manifest["area_um2"][i])} for i in chosen]
        writer.write_shard(name, np.ascontiguousarray(source.images(chosen)[:, :size, :size]), rows,
                           input_key=f"pool-{name}")
    return writer.finalize()


@pytest.fixture(scope="module")
def patient_dask_timeouts():
    """On a machine shared with long runs, worker processes may take minutes to start or answer; a Dask test
    is about results, not latency, so Dask waits longer than its defaults before giving up."""
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "300s", "distributed.comm.timeouts.tcp": "300s",
                          "distributed.deploy.lost-worker-timeout": "300s"}):
        yield


@pytest.fixture
def drawn_targets(monkeypatch) -> list:
    """The class targets of every loss evaluation of ``train_classifier``, batch by batch (a spy on its loss)."""
    from bioaug.classify import train as train_module

    drawn: list = []
    original = train_module.nn.CrossEntropyLoss

    class Spy(original):
        def forward(self, logits, targets):
            drawn.append(targets.numpy().copy())
            return super().forward(logits, targets)

    monkeypatch.setattr(train_module.nn, "CrossEntropyLoss", Spy)
    return drawn
