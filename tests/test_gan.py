"""The conditional GAN: networks, augmentation, sampling, the trainer's run directory, exact resume, DDP, errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioaug.errors import BioaugError, CheckpointError, ConfigError, StoreError
from bioaug.gan import TrainConfig, generate, load_checkpoint, load_generator, train
from bioaug.gan.config import DIFF_AUGMENTATIONS
from bioaug.gan.diffaugment import AdaController, diffaugment
from bioaug.gan.data import ClassBalancedSampler
from bioaug.gan.grids import PAD, cell_size
from bioaug.gan.networks import Discriminator, Generator
from bioaug.gan.run import RunDirectory
from bioaug.store import StoreHeader, StoreWriter
from conftest import make_disc_store


def tiny(**overrides) -> TrainConfig:
    """A config that trains in a fraction of a second per step on the 32 px disc store."""
    values = dict(steps=4, batch_size=12, channels=8, max_channels=32, z_dim=16, snapshot_every=2,
                  checkpoint_every=2, log_every=2, grid_columns=4, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# -- networks ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, stages", [(32, 3), (64, 4), (128, 5)])
def test_networks_shapes_and_depth_follow_the_patch_size(size, stages):
    generator = Generator(3, size, z_dim=16, channels=4, max_channels=16)
    discriminator = Discriminator(3, size, channels=4, max_channels=16)
    labels = torch.tensor([0, 1, 2, 1])
    images = generator(torch.randn(4, 16), labels)
    assert images.shape == (4, 3, size, size)
    assert images.abs().max() <= 1
    assert discriminator(images, labels).shape == (4,)
    assert len(generator.convs) == len(discriminator.downs) == stages


def test_class_conditions_both_networks_and_discriminator_is_spectrally_normalised():
    generator = Generator(3, 32, z_dim=16, channels=8, max_channels=32).eval()
    discriminator = Discriminator(3, 32, channels=8, max_channels=32)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert not torch.allclose(generator(z, torch.tensor([0, 0])), generator(z, torch.tensor([1, 1])))
        x = generator(z, torch.tensor([0, 0]))
        assert not torch.allclose(discriminator(x, torch.tensor([0, 0])), discriminator(x, torch.tensor([2, 2])))
    convs = [discriminator.from_rgb, *discriminator.downs, discriminator.final, discriminator.linear,
             discriminator.embed]
    assert all(torch.nn.utils.parametrize.is_parametrized(layer, "weight") for layer in convs)


# -- augmentation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DIFF_AUGMENTATIONS))
def test_each_augmentation_is_differentiable_and_changes_images(name):
    torch.manual_seed(0)
    images = (torch.rand(6, 3, 32, 32) * 2 - 1).requires_grad_(True)
    out = diffaugment(images, 1.0, [name])
    assert out.shape == images.shape
    assert not torch.equal(out, images)
    out.square().sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_probability_zero_is_identity_and_partial_probability_leaves_some_images_alone():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 16, 16) * 2 - 1
    assert diffaugment(images, 0.0, list(DIFF_AUGMENTATIONS)) is images
    out = diffaugment(images, 0.3, ["translation"])
    untouched = (out == images).flatten(1).all(dim=1)
    assert 0 < untouched.sum() < 64


def test_adaptive_probability_follows_the_sign_of_real_scores():
    config = TrainConfig(batch_size=10, ada_interval=1, ada_kimg=0.1, diffaugment_p=0.5)
    controller = AdaController(config, torch.device("cpu"))
    controller.observe(torch.ones(10))  # r_t = 1 > 0.6: overfitting, raise p
    controller.adjust(lambda t: t)
    assert controller.p == pytest.approx(0.6) and controller.last_rt == 1
    controller.observe(-torch.ones(10))
    controller.observe(-torch.ones(10))
    controller.adjust(lambda t: t)
    assert controller.p == pytest.approx(0.5)
    fixed = AdaController(TrainConfig(ada=False, diffaugment_p=0.3).resolve(32), torch.device("cpu"))
    fixed.observe(torch.ones(10))
    fixed.adjust(lambda t: t)
    assert fixed.p == 0.3


# -- sampling of batches ---------------------------------------------------------------------------------------

def test_batches_are_class_balanced_and_shard_over_ranks():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 1)
    sampler = ClassBalancedSampler(labels, ["a", "b", "c"], seed=3)
    indices, batch_labels, classes = sampler.batch(step=7, batch_size=12)
    assert np.bincount(batch_labels, minlength=3).tolist() == [4, 4, 4]
    assert (labels[indices] == batch_labels).all() and (classes == batch_labels).all()
    first = sampler.batch(step=7, batch_size=12, rank=0, world_size=2).indices
    second = sampler.batch(step=7, batch_size=12, rank=1, world_size=2).indices
    assert np.concatenate([first, second]).tolist() == indices.tolist()
    seen = np.concatenate([sampler.batch(step, 12)[0] for step in range(50)])
    assert set(seen[labels[seen] == 0]) == set(range(50))  # every majority patch is visited


# -- training runs -------------------------------------------------------------------------------------------

def test_a_few_steps_write_checkpoint_log_and_grids(disc_store, tmp_path):
    run = train(disc_store, tmp_path / "run", tiny(), progress=False)

    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["class_names"] == ["small", "large", "pale"]
    assert state["patch_size"] == 32 and state["store_sha256"] == disc_store.content_hash
    assert state["config"]["channels"] == 8 and len(state["rng"]) == 1

    lines = log_lines(run)
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "end"
    steps = [line for line in lines if "loss_d" in line]
    assert [line["step"] for line in steps] == [2, 4]
    assert all(math.isfinite(line["loss_d"]) and line["images_per_s"] > 0 and line["images_per_cpu_s"] > 0
               for line in steps)
    assert set(steps[-1]["diversity"]) == {"small", "large", "pale"}

    cell = cell_size(32)
    for grid in (run / "samples" / "step-000002.png", run / "samples" / "step-000004.png", run / "reals.png"):
        image = Image.open(grid)
        assert image.height == 3 * (cell + PAD) + PAD  # one row per class
        assert image.width > 4 * (cell + PAD) + PAD  # four samples and a label column

    record = json.loads((run / "config.json").read_text())
    assert record["inputs"]["store_sha256"] == disc_store.content_hash
    assert record["class_names"] == ["small", "large", "pale"] and record["patch_size"] == 32
    assert record["config"]["seed"] == 0 and "torch" in record["versions"]

    # the layout's owner reads the same files, the run given by its directory or by its checkpoint
    directory = RunDirectory.of(run / "checkpoint.pt")
    assert directory.path == run and RunDirectory.of(run).checkpoint == run / "checkpoint.pt"
    assert directory.read_record() == record and directory.read_log() == lines
    assert directory.sample_grid(4) == run / "samples" / "step-000004.png"
    assert directory.training_store() == (str(disc_store.path.resolve()), disc_store.content_hash)
    assert directory.load_checkpoint()["step"] == 4


def test_killed_and_resumed_run_ends_with_identical_weights(disc_store, tmp_path):
    options = dict(checkpoint_every=3, snapshot_every=100, diffaugment_p=0.5, ada_interval=2, ada_kimg=0.05)
    straight = train(disc_store, tmp_path / "straight", tiny(steps=6, **options), progress=False)
    resumed = train(disc_store, tmp_path / "resumed", tiny(steps=3, **options), progress=False)
    train(disc_store, resumed, tiny(steps=6, **options), progress=False)

    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    assert a["step"] == b["step"] == 6 and a["augment_p"] == b["augment_p"]
    for network in ("generator", "discriminator", "generator_ema"):
        assert a[network].keys() == b[network].keys()
        for name, tensor in a[network].items():
            assert torch.equal(tensor, b[network][name]), f"{network}.{name} differs"
    assert [line["event"] for line in log_lines(resumed) if "event" in line] == ["start", "end", "resume", "end"]


def test_a_checkpoint_written_under_the_old_option_names_still_resumes_and_samples(disc_store, tmp_path):
    # `diffaugment` and `diffaugment_p` were `augment` and `augment_p`: runs trained before the rename go on
    run = train(disc_store, tmp_path / "run", tiny(steps=2, diffaugment_p=0.25), progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    config = state["config"]
    config["augment"], config["augment_p"] = config.pop("diffaugment"), config.pop("diffaugment_p")
    torch.save(state, run / "checkpoint.pt")

    assert load_generator(run / "checkpoint.pt")[1]["config"]["diffaugment_p"] == 0.25
    train(disc_store, run, tiny(steps=3, diffaugment_p=0.25), progress=False)  # the options match: it resumes
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3
    with pytest.raises(CheckpointError, match="diffaugment_p=0.25"):
        train(disc_store, run, tiny(steps=4, diffaugment_p=0.5), progress=False)


def test_new_starts_over(disc_store, tmp_path):
    run = train(disc_store, tmp_path / "run", tiny(steps=2), progress=False)
    train(disc_store, run, tiny(steps=2), new=True, progress=False)
    assert [line.get("event") for line in log_lines(run)] == ["start", None, "end"]


def test_sampling_from_a_checkpoint_is_deterministic(disc_store, tmp_path):
    run = train(disc_store, tmp_path / "run", tiny(steps=2), progress=False)
    generator, meta = load_generator(run / "checkpoint.pt")
    assert meta["class_names"] == ["small", "large", "pale"] and meta["step"] == 2
    labels = [0, 1, 2, 2, 1]
    first = generate(generator, labels, seed=5)
    assert first.shape == (5, 32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, generate(generator, labels, seed=5))
    assert not np.array_equal(first, generate(generator, labels, seed=6))
    assert generate(generator, [], seed=5).shape == (0, 32, 32, 3)


def test_the_generator_always_runs_on_fixed_chunks_so_a_patch_ignores_the_batch(disc_store, tmp_path):  # 19.1
    # CPU kernels pick code paths by batch shape: a patch drawn alone once differed by a grey level from the
    # same patch drawn among 256 (AMD EPYC). Every forward pass now has the same shape.
    import torch

    from bioaug.gan.sampling import GENERATOR_CHUNK, run_in_chunks

    run = train(disc_store, tmp_path / "run", tiny(steps=2), progress=False)
    generator, _ = load_generator(run / "checkpoint.pt")
    shapes = []
    generator.register_forward_hook(lambda _m, inputs, _o: shapes.append(len(inputs[0])))
    latents = torch.randn(2 * GENERATOR_CHUNK + 3, generator.z_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(len(latents)) % 3
    whole = run_in_chunks(generator, latents, labels)
    assert whole.shape == (len(latents), 32, 32, 3) and set(shapes) == {GENERATOR_CHUNK}
    for start, stop in [(0, 1), (1, 2), (5, 40), (GENERATOR_CHUNK - 1, len(latents))]:
        np.testing.assert_array_equal(run_in_chunks(generator, latents[start:stop], labels[start:stop],
                                                    first=start), whole[start:stop])
    assert set(shapes) == {GENERATOR_CHUNK} and generator.training is False


def test_ddp_with_two_gloo_processes_has_one_writer(disc_store, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from bioaug.gan import TrainConfig, train
        rank = int(os.environ["RANK"])
        out = {str(tmp_path)!r} + ("/run" if rank == 0 else "/rank1")
        config = TrainConfig(steps=4, batch_size=12, channels=8, max_channels=32, z_dim=16, snapshot_every=2,
                             checkpoint_every=2, log_every=2, grid_columns=4, device="cpu")
        train({str(disc_store.path)!r}, out, config, progress=False)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(script)], check=True, env=env, timeout=300, capture_output=True)

    assert not (tmp_path / "rank1").exists()  # rank 1 never touches the run directory
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng"]) == 2
    single = Generator(3, 32, z_dim=16, channels=8, max_channels=32).state_dict()
    assert {k: v.shape for k, v in state["generator_ema"].items()} == {k: v.shape for k, v in single.items()}
    assert Image.open(tmp_path / "run" / "samples" / "step-000004.png").height == 3 * (cell_size(32) + PAD) + PAD
    assert [line["step"] for line in log_lines(tmp_path / "run") if "loss_d" in line] == [2, 4]


# -- errors --------------------------------------------------------------------------------------------------

def one_line(error: BioaugError, *needles: str) -> None:
    message = str(error)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_store_without_labels_is_refused(tmp_path):
    writer = StoreWriter(tmp_path / "store", StoreHeader(patch_size=32, mpp=0.5, class_names=["a", "b"]))
    writer.write_shard("s", np.zeros((4, 32, 32, 3), np.uint8), [{"slide": "s"}] * 4, input_key="k")
    with pytest.raises(StoreError) as caught:
        train(writer.finalize(), tmp_path / "run", tiny(), progress=False)
    one_line(caught.value, str(tmp_path / "store"), "no labelled patches")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_checkpoint_is_refused(disc_store, tmp_path, damage):
    run = train(disc_store, tmp_path / "run", tiny(steps=2), progress=False)
    checkpoint = run / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(os.urandom(4096) if damage == "corrupt" else data[: len(data) // 2])
    with pytest.raises(CheckpointError) as caught:
        train(disc_store, run, tiny(steps=4), progress=False)
    one_line(caught.value, str(checkpoint), "corrupt or truncated")
    with pytest.raises(CheckpointError):
        load_generator(checkpoint)


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "nothing.pt")
    one_line(caught.value, "nothing.pt")


def test_resuming_on_other_patch_size_classes_or_options_is_refused(disc_store, tmp_path):
    run = train(disc_store, tmp_path / "run", tiny(steps=2), progress=False)
    checkpoint = str(run / "checkpoint.pt")
    bigger = make_disc_store(tmp_path / "big", per_class=4, slides=1, patch_size=64)
    with pytest.raises(CheckpointError) as caught:
        train(bigger, run, tiny(steps=4), progress=False)
    one_line(caught.value, checkpoint, "32 px", "64 px")
    other = make_disc_store(tmp_path / "other", per_class=4, slides=1, class_names=("a", "b", "c"))
    with pytest.raises(CheckpointError) as caught:
        train(other, run, tiny(steps=4), progress=False)
    one_line(caught.value, checkpoint, "classes")
    with pytest.raises(CheckpointError) as caught:
        train(disc_store, run, tiny(steps=4, z_dim=32), progress=False)
    one_line(caught.value, checkpoint, "z_dim=16")


@pytest.mark.parametrize("size, message", [
    (48, "no architecture for 48 px"),
    (8, "no architecture for 8 px"),
    (256, "no default architecture for 256 px"),
])
def test_patch_size_without_architecture_is_a_config_error(size, message):
    with pytest.raises(ConfigError) as caught:
        TrainConfig().resolve(size)
    one_line(caught.value, message)


def test_sizes_with_defaults_or_explicit_channels_resolve():
    for size in (32, 64, 128):
        resolved = TrainConfig().resolve(size)
        assert None not in (resolved.channels, resolved.max_channels, resolved.batch_size)
    assert TrainConfig(channels=16, max_channels=256, batch_size=8).resolve(256).channels == 16
    with pytest.raises(ConfigError):
        TrainConfig(ada_target=1.5).validate()
