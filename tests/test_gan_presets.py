"""Second- and third-edition GAN: presets by name, residual and FastGAN networks, LeCam, unlabelled rows and the
time budget."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bioaug.cli import EXIT_BAD_INPUT, main
from bioaug.config import build_config
from bioaug.errors import CheckpointError, ConfigError
from bioaug.gan import PRESETS, TrainConfig, generate, load_checkpoint, load_generator, train
from bioaug.gan.data import Batch, ClassBalancedSampler
from bioaug.gan.distributed import Context
from bioaug.gan.fastgan import FastDiscriminator, FastGenerator
from bioaug.gan.losses import LeCam
from bioaug.gan.networks import build_discriminator, build_generator
from bioaug.gan.residual import ResidualDiscriminator, ResidualGenerator
from bioaug.gan.trainer import Trainer
from bioaug.store import PatchStore, StoreWriter
from conftest import make_disc_store
from test_gan import log_lines, tiny


def mixed_store(path: Path, *, unlabelled: int = 24, patch_size: int = 32) -> PatchStore:
    """The disc store plus a last shard of ``unlabelled`` rows without a label (as ``--label-by none`` writes)."""
    labelled = make_disc_store(path, patch_size=patch_size)
    writer = StoreWriter(path, labelled.header)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (unlabelled, patch_size, patch_size, 3), dtype=np.uint8)
    rows = [{"slide": "pool", "x": float(i), "y": 0.0} for i in range(unlabelled)]
    writer.write_shard("unlabelled", images, rows, input_key="pool")
    return writer.finalize()


# -- the registry ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, generator, discriminator", [
    ("resnet", ResidualGenerator, ResidualDiscriminator),
    ("fastgan", FastGenerator, FastDiscriminator),
])
def test_every_preset_is_registered_and_builds_its_networks(preset, generator, discriminator):
    assert {"plain", "resnet", "fastgan"} <= set(PRESETS)
    config = tiny(preset=preset).resolve(32)
    assert isinstance(build_generator(config, 3, 32), generator)
    assert isinstance(build_discriminator(config, 3, 32), discriminator)


@pytest.mark.parametrize("make", [
    lambda: TrainConfig(preset="stylegan9").validate(),
    lambda: TrainConfig(preset="stylegan9").resolve(32),
    lambda: build_config(TrainConfig, {"preset": "stylegan9"}, source="train.yaml"),
])
def test_an_unknown_generator_name_is_one_line_listing_the_valid_names(make):
    with pytest.raises(ConfigError) as caught:
        make()
    message = str(caught.value)
    assert "\n" not in message and "'stylegan9'" in message
    assert all(name in message for name in PRESETS)


def test_an_unknown_generator_name_on_the_command_line_exits_2_before_training(disc_store, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(disc_store.path), "--out", str(out), "--preset", "nope"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and all(name in error for name in ("plain", "resnet", "fastgan"))
    assert not out.exists()


# -- residual networks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, stages", [(32, 3), (64, 4), (128, 5)])
def test_residual_networks_follow_the_patch_size(size, stages):
    generator = ResidualGenerator(3, size, z_dim=16, channels=4, max_channels=16)
    discriminator = ResidualDiscriminator(3, size, channels=4, max_channels=16)
    labels = torch.tensor([0, 1, 2, 1])
    images = generator(torch.randn(4, 16), labels)
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1
    assert discriminator(images, labels).shape == (4,)
    assert len(generator.blocks) == stages and len(discriminator.blocks) == stages + 1
    with torch.no_grad():
        generator.eval()
        z = torch.randn(2, 16)
        assert not torch.allclose(generator(z, torch.tensor([0, 0])), generator(z, torch.tensor([1, 1])))


# -- FastGAN networks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, stages", [(32, 4), (64, 5), (128, 6)])
def test_fastgan_networks_follow_the_patch_size_and_excite_every_stage_from_16_px(size, stages):
    generator = FastGenerator(3, size, z_dim=16, channels=4, max_channels=16)
    discriminator = FastDiscriminator(3, size, channels=4, max_channels=16)
    labels = torch.tensor([0, 1, 2, 1])
    images = generator(torch.randn(4, 16), labels)
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1
    assert len(generator.norms) == stages and len(generator.excitations) == stages - 2  # 16 px and finer
    assert discriminator(images, labels).shape == (4,)
    scores, reconstruction = discriminator(images, labels, reconstruct=2)
    assert scores.shape == (4,) and reconstruction.shape == () and reconstruction > 0
    with torch.no_grad():
        generator.eval()
        z = torch.randn(2, 16)
        assert not torch.allclose(generator(z, torch.tensor([0, 0])), generator(z, torch.tensor([1, 1])))


def test_fastgan_reconstruction_trains_the_decoders_from_the_reals_only():
    discriminator = FastDiscriminator(3, 32, channels=4, max_channels=16)
    reals, fakes = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    _, loss = discriminator(torch.cat([reals, fakes]), labels, reconstruct=3)
    loss.backward()
    decoders = [p for name, p in discriminator.named_parameters() if name.startswith("decode_")]
    assert decoders and all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoders)
    assert discriminator.embed.parametrizations.weight.original.grad is None  # the class plays no part
    torch.manual_seed(0)
    _, alone = discriminator(reals, labels[:3], reconstruct=3)
    torch.manual_seed(0)
    _, mixed = discriminator(torch.cat([reals, fakes]), labels, reconstruct=3)
    torch.testing.assert_close(alone, mixed)  # the fakes do not enter the loss


def test_fastgan_needs_32_px_patches_and_says_so_in_one_line():
    with pytest.raises(ConfigError) as caught:
        TrainConfig(preset="fastgan", channels=4, max_channels=16, batch_size=4).resolve(16)
    message = str(caught.value)
    assert "\n" not in message and "no architecture for 16 px" in message and "at least 32" in message


@pytest.mark.parametrize("preset, size", [("plain", 32), ("resnet", 32), ("resnet", 64), ("resnet", 128),
                                          ("fastgan", 32), ("fastgan", 64), ("fastgan", 128)])
def test_every_preset_trains_resumes_bit_exactly_and_samples_deterministically(preset, size, tmp_path):
    store = make_disc_store(tmp_path / "store", per_class=8, patch_size=size)
    options = dict(preset=preset, checkpoint_every=3, snapshot_every=100, diffaugment_p=0.5, ada_interval=2,
                   ada_kimg=0.05, lecam=0.3, channels=4, max_channels=16, batch_size=6, grid_columns=2)
    straight = train(store, tmp_path / "straight", tiny(steps=6, **options), progress=False)
    resumed = train(store, tmp_path / "resumed", tiny(steps=3, **options), progress=False)
    train(store, resumed, tiny(steps=6, **options), progress=False)

    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    assert a["step"] == b["step"] == 6 and a["config"]["preset"] == preset
    assert torch.equal(a["lecam_state"], b["lecam_state"]) and a["lecam_state"][2] == 6 * 2  # 2 D steps/step
    for network in ("generator", "discriminator", "generator_ema"):
        for name, tensor in a[network].items():
            assert torch.equal(tensor, b[network][name]), f"{network}.{name} differs"
    losses = [line for line in log_lines(straight) if "loss_d" in line]
    assert losses and all("lecam" in line for line in losses)
    assert all(("reconstruction" in line) == (preset == "fastgan") for line in losses)

    generator, meta = load_generator(straight / "checkpoint.pt")
    assert type(generator).__name__ == PRESETS[preset].generator.split(":")[1]
    first = generate(generator, [0, 1, 2, 0], seed=3)
    assert first.shape == (4, size, size, 3)
    np.testing.assert_array_equal(first, generate(generator, [0, 1, 2, 0], seed=3))
    np.testing.assert_array_equal(first, generate(load_generator(straight / "checkpoint.pt")[0], [0, 1, 2, 0],
                                                  seed=3))


def _cpu_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


needs_bf16 = pytest.mark.skipif(not _cpu_bf16(), reason="no CPU bf16 kernels")


@pytest.mark.parametrize("options", [
    pytest.param(dict(precision="bf16"), marks=needs_bf16, id="bf16"),
    pytest.param(dict(channels_last=False), id="contiguous"),
    pytest.param(dict(d_steps=1), id="d_steps=1"),
    pytest.param(dict(d_steps=1, precision="bf16", diffaugment=["color", "translation", "cutout"]), marks=needs_bf16,
                 id="all-cheap"),
])
def test_every_throughput_option_keeps_resume_bit_exact(options, disc_store, tmp_path):
    common = dict(checkpoint_every=3, snapshot_every=100, diffaugment_p=0.5, ada_interval=2, ada_kimg=0.05, **options)
    straight = train(disc_store, tmp_path / "straight", tiny(steps=6, **common), progress=False)
    resumed = train(disc_store, tmp_path / "resumed", tiny(steps=3, **common), progress=False)
    train(disc_store, resumed, tiny(steps=6, **common), progress=False)
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for network in ("generator", "discriminator", "generator_ema"):
        for name, tensor in a[network].items():
            assert torch.equal(tensor, b[network][name]), f"{network}.{name} differs"
    record = json.loads((straight / "config.json").read_text())
    assert record["precision"] == options.get("precision", "fp32")


def test_bf16_on_a_cpu_without_bf16_kernels_is_a_one_line_error(disc_store, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ConfigError) as caught:
        train(disc_store, tmp_path / "run", tiny(precision="bf16"), progress=False)
    assert "\n" not in str(caught.value) and "precision 'bf16' needs a device with bf16 support" in str(caught.value)


def test_a_checkpoint_from_before_presets_is_read_as_the_plain_preset(disc_store, tmp_path):
    run = train(disc_store, tmp_path / "run", tiny(steps=2, lecam=0.0), progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in ("preset", "lecam", "unlabelled", "unlabelled_fraction", "time_budget", "lecam_decay"):
        del state["config"][key]
    del state["lecam_state"], state["train_seconds"]
    torch.save(state, run / "checkpoint.pt")
    generator, meta = load_generator(run / "checkpoint.pt")
    assert meta["config"]["preset"] == "plain" and type(generator).__name__ == "Generator"
    # such a run trained without LeCam, which the plain preset now has by default: resuming it asks for lecam 0
    with pytest.raises(CheckpointError, match="trained with lecam=0.0 but this run asks 0.3"):
        train(disc_store, run, tiny(steps=4), progress=False)
    train(disc_store, run, tiny(steps=4, lecam=0.0), progress=False)  # and it resumes
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4


# -- standing batch-norm statistics ------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_standing_statistics_average_the_generators_own_activations_and_move_nothing_else(preset):
    from bioaug.gan.ema import standing_statistics

    config = TrainConfig(preset=preset, channels=4, max_channels=16, z_dim=8).resolve(32)
    generator = build_generator(config, 3, 32)
    generator.train()
    for _ in range(3):  # running statistics of some other activations, and spectral norm's power iteration
        generator(torch.randn(5, 8) * 3 + 1, torch.tensor([0, 1, 2, 0, 1]))
    generator.eval()
    before = {name: tensor.clone() for name, tensor in generator.state_dict().items()}
    standing = standing_statistics(generator, 3, batches=4, batch_size=6, seed=5)

    for name, tensor in generator.state_dict().items():  # the original is untouched
        assert torch.equal(tensor, before[name]), name
    after = standing.state_dict()
    for name, tensor in after.items():  # weights and spectral-norm vectors as they were
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(tensor, before[name]), name
    first_norm = next(m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d))
    copy_norm = next(m for m in standing.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not copy_norm.training and copy_norm.momentum == 0.1
    # the first norm's mean is the average of its per-batch input means over the same four batches
    replay = copy.deepcopy(generator)
    means: list[torch.Tensor] = []
    next(m for m in replay.modules() if isinstance(m, torch.nn.BatchNorm2d)).register_forward_hook(
        lambda module, inputs, output: means.append(inputs[0].mean((0, 2, 3))))
    stream = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _ in range(4):
            latents = torch.randn(6, 8, generator=stream)
            replay(latents, torch.randint(0, 3, (6,), generator=stream))
    assert len(means) == 4
    torch.testing.assert_close(copy_norm.running_mean, torch.stack(means).mean(0))
    assert not torch.allclose(copy_norm.running_mean, first_norm.running_mean)


@pytest.mark.parametrize("ema_stats", ["standing", "training"])
def test_checkpoints_keep_the_ema_statistics_the_config_asks_for(disc_store, tmp_path, ema_stats):
    run = train(disc_store, tmp_path / ema_stats, tiny(steps=3, ema_stats=ema_stats), progress=False)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["config"]["ema_stats"] == ema_stats
    means = [name for name in state["generator"] if name.endswith("running_mean")]
    assert means
    same = all(torch.equal(state["generator"][name], state["generator_ema"][name]) for name in means)
    assert same == (ema_stats == "training")


def test_a_finished_run_takes_new_ema_statistics_without_training(disc_store, tmp_path):
    run = train(disc_store, tmp_path / "run", tiny(steps=3, ema_stats="training"), progress=False)
    before = load_checkpoint(run / "checkpoint.pt")
    train(disc_store, run, tiny(steps=3, ema_stats="standing"), progress=False)
    after = load_checkpoint(run / "checkpoint.pt")
    assert after["step"] == 3 and after["config"]["ema_stats"] == "standing"
    for network in ("generator", "discriminator"):
        for name, tensor in before[network].items():
            assert torch.equal(tensor, after[network][name]), name
    changed = [name for name, tensor in before["generator_ema"].items()
               if not torch.equal(tensor, after["generator_ema"][name])]
    assert changed and all(name.endswith(("running_mean", "running_var", "num_batches_tracked")) for name in changed)
    assert log_lines(run)[-1]["event"] == "ema statistics rewritten"


def test_the_preset_chooses_lecam_unless_set():
    assert TrainConfig().resolve(32).lecam == 0.3  # the plain preset: two-sample accuracy 0.780 -> 0.745
    assert TrainConfig(preset="fastgan").resolve(64).lecam == 0.3  # 0.928 -> 0.893 (generator-choice-32px)
    assert TrainConfig(preset="resnet").resolve(64).lecam == 0.0
    assert TrainConfig(lecam=0.0).resolve(32).lecam == 0.0
    assert TrainConfig(preset="fastgan", lecam=0.1).resolve(32).lecam == 0.1


def test_the_preset_chooses_the_ema_statistics_unless_set():
    assert TrainConfig().resolve(32).ema_stats == "standing"
    assert TrainConfig(preset="resnet").resolve(32).ema_stats == "training"
    assert TrainConfig(preset="resnet", ema_stats="standing").resolve(32).ema_stats == "standing"
    with pytest.raises(ConfigError, match="^--ema-stats: 'copied' is not one of standing, training"):
        build_config(TrainConfig, {"ema_stats": "copied"})


# -- LeCam ---------------------------------------------------------------------------------------------------

def test_lecam_is_zero_for_identical_real_and_fake_histories_and_grows_with_their_gap():
    def penalty_after(gap: float) -> float:
        lecam = LeCam(1.0, 0.9, torch.device("cpu"))
        real, fake = torch.full((8,), 0.25 + gap), torch.full((8,), 0.25 - gap)
        for _ in range(20):
            lecam.update(real, fake)
        return float(lecam.penalty(real, fake))

    assert penalty_after(0.0) == 0.0
    penalties = [penalty_after(gap) for gap in (0.1, 0.5, 1.0, 2.0)]
    assert all(0 < a < b for a, b in zip(penalties, penalties[1:]))
    assert penalties[-1] == pytest.approx(2 * (2 * 2.0) ** 2)  # both sides: relu(real - a_fake)^2 = (2 gap)^2


def test_lecam_averages_start_at_the_first_batch_and_then_move_slowly():
    lecam = LeCam(0.5, 0.9, torch.device("cpu"))
    lecam.update(torch.tensor([1.0, 3.0]), torch.tensor([-2.0]))
    assert lecam.state.tolist() == [2.0, -2.0, 1.0]
    lecam.update(torch.tensor([12.0]), torch.tensor([-2.0]))
    assert lecam.state.tolist() == pytest.approx([3.0, -2.0, 2.0])


# -- unlabelled rows -----------------------------------------------------------------------------------------

def test_batches_hold_the_unlabelled_share_spread_over_ranks(tmp_path):
    store = mixed_store(tmp_path / "store")
    sampler = ClassBalancedSampler(store.labels, store.class_names, 0, unlabelled_fraction=0.5)
    batch = sampler.batch(step=3, batch_size=12)
    unlabelled = batch.labels < 0
    assert unlabelled.sum() == 6 and (store.labels[batch.indices[unlabelled]] == -1).all()
    assert (store.labels[batch.indices[~unlabelled]] == batch.labels[~unlabelled]).all()
    assert np.bincount(batch.labels[~unlabelled], minlength=3).tolist() == [2, 2, 2]
    assert np.bincount(batch.classes, minlength=3).tolist() == [4, 4, 4]  # fakes stay class-balanced
    halves = [sampler.batch(step=3, batch_size=12, rank=r, world_size=2) for r in (0, 1)]
    assert np.concatenate([h.indices for h in halves]).tolist() == batch.indices.tolist()
    assert all((h.labels < 0).sum() == 3 for h in halves)
    seen = np.concatenate([sampler.batch(step, 12).indices for step in range(4)])
    assert set(seen[store.labels[seen] < 0]) == set(np.flatnonzero(store.labels < 0))  # every row visited
    ignored = ClassBalancedSampler(store.labels, store.class_names, 0, unlabelled_fraction=0.0)
    assert (ignored.batch(step=3, batch_size=12).labels >= 0).all()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_unlabelled_rows_reach_only_the_class_independent_part_of_the_discriminator(preset, tmp_path):
    store = mixed_store(tmp_path / "store")
    config = tiny(preset=preset, unlabelled="discriminator").resolve(32)
    sampler = ClassBalancedSampler(store.labels, store.class_names, 0, unlabelled_fraction=0.5)
    trainer = Trainer(store, tmp_path / "run", config, sampler, Context(0, 1, torch.device("cpu")), progress=False)
    discriminator = trainer.discriminator
    embed = discriminator.embed.parametrizations.weight.original
    unlabelled = np.flatnonzero(store.labels < 0)[:6]

    def gradients(batch: Batch) -> tuple[float, float]:
        discriminator.zero_grad(set_to_none=False)
        loss, *_ = trainer.discriminator_loss(trainer.generator, discriminator, batch)
        loss.backward()
        psi = discriminator.linear.parametrizations.weight.original
        return float(embed.grad.abs().sum()), float(psi.grad.abs().sum())

    embed_grad, psi_grad = gradients(Batch(unlabelled, np.full(6, -1), np.arange(6) % 3))
    assert embed_grad == 0.0 and psi_grad > 0
    features = [p for name, p in discriminator.named_parameters() if "embed" not in name and "linear" not in name]
    assert all(p.grad is not None for p in features) and sum(float(p.grad.abs().sum()) for p in features) > 0
    labelled = sampler.batch(0, 12)
    labelled = Batch(*(part[labelled.labels >= 0] for part in labelled))
    embed_grad, psi_grad = gradients(labelled)
    assert embed_grad > 0 and psi_grad > 0


def test_training_with_unlabelled_rows_records_them_and_ignore_equals_a_labelled_only_store(tmp_path):
    mixed = mixed_store(tmp_path / "mixed")
    labelled = make_disc_store(tmp_path / "labelled")
    run = train(mixed, tmp_path / "semi", tiny(unlabelled="discriminator", unlabelled_fraction=0.25),
                progress=False)
    record = json.loads((run / "config.json").read_text())
    assert record["unlabelled_count"] == 24 and record["unlabelled_per_batch"] == 3
    assert record["config"]["unlabelled"] == "discriminator"

    ignored = load_checkpoint(train(mixed, tmp_path / "ignored", tiny(), progress=False) / "checkpoint.pt")
    plain = load_checkpoint(train(labelled, tmp_path / "plain", tiny(), progress=False) / "checkpoint.pt")
    semi = load_checkpoint(run / "checkpoint.pt")
    for name, tensor in plain["generator"].items():
        assert torch.equal(tensor, ignored["generator"][name])
    assert any(not torch.equal(t, semi["generator"][n]) for n, t in plain["generator"].items())


@pytest.mark.parametrize("values, needle", [
    ({"unlabelled": "generator"}, "--unlabelled: 'generator' is not one of ignore, discriminator"),
    ({"unlabelled_fraction": 1.0}, "--unlabelled-fraction: must lie in [0, 1)"),
    ({"lecam": -1.0}, "--lecam: must be at least 0"),
    ({"time_budget": -5}, "--time-budget: must be at least 0"),
])
def test_bad_second_edition_options_are_one_line(values, needle):
    with pytest.raises(ConfigError) as caught:
        build_config(TrainConfig, values)
    assert "\n" not in str(caught.value) and needle in str(caught.value)


# -- time budget ---------------------------------------------------------------------------------------------

def test_a_time_budget_stops_training_and_counts_over_resumes(disc_store, tmp_path):
    run = train(disc_store, tmp_path / "run", tiny(steps=50, time_budget=1e-6, log_every=3), progress=False)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 3 and state["train_seconds"] > 0  # stopped at the first check
    events = [line.get("event") for line in log_lines(run) if "event" in line]
    assert events == ["start", "time budget spent", "end"]
    train(disc_store, run, tiny(steps=50, time_budget=1e-6, log_every=3), progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3  # the budget is spent: nothing more
    train(disc_store, run, tiny(steps=5, time_budget=0, log_every=3), progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 5


def test_a_cpu_budget_counts_process_time_not_wall_time(disc_store, tmp_path, monkeypatch):
    import itertools
    import time

    ticks = itertools.count(step=100.0)  # a process that burns 100 CPU seconds between any two looks
    monkeypatch.setattr(time, "process_time", lambda: next(ticks))
    wall = train(disc_store, tmp_path / "wall", tiny(steps=6, time_budget=50, log_every=3), progress=False)
    assert load_checkpoint(wall / "checkpoint.pt")["step"] == 6  # a few wall seconds: under budget
    cpu = train(disc_store, tmp_path / "cpu", tiny(steps=6, time_budget=50, log_every=3, budget_clock="cpu"),
                progress=False)
    state = load_checkpoint(cpu / "checkpoint.pt")
    assert state["step"] == 3 and state["train_seconds"] >= 100


def test_with_a_time_budget_progress_counts_budget_seconds(disc_store, tmp_path, caplog):
    import logging

    from bioaug.progress import set_log_interval

    set_log_interval(0)
    caplog.set_level(logging.INFO, logger="bioaug")
    try:
        train(disc_store, tmp_path / "run", tiny(steps=4, time_budget=900, budget_clock="cpu", log_every=2))
    finally:
        set_log_interval(None)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("train:")]
    assert lines and all("/900 cpu-s" in line for line in lines)  # the ETA is when the budget runs out
    assert "step=4" in lines[-1]


# -- distributed -----------------------------------------------------------------------------------------------

def test_ranks_sharing_a_gpu_use_gloo_and_ranks_with_a_gpu_each_use_nccl(monkeypatch):
    from bioaug.gan.distributed import choose_backend

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cuda = torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert choose_backend(cuda) == "nccl" and choose_backend(torch.device("cpu")) == "gloo"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.warns(RuntimeWarning, match="share 1 GPU"):
        assert choose_backend(cuda) == "gloo"
