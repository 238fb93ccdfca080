"""The training loop of ``bioaug train``: resume, devices, DDP, logging and snapshots.

Rank 0 writes the run directory, whose layout ``bioaug.gan.run`` owns: the run record, the checkpoint, the
log, sample grids at every snapshot and the real patches beside them.

Exact resume: every source of randomness is either a pure function of (seed, step, rank) (the batches) or a
generator whose state the checkpoint holds (latents and augmentation), and nothing that happens only at
snapshots or checkpoints draws from those generators; so on the CPU a run killed and resumed ends with the
same weights, bit for bit, as one that ran straight through. (A ``time_budget`` makes where a run stops depend
on the machine's speed; every step it takes is still the same. It counts wall seconds, or with
``budget_clock=cpu`` the process's CPU seconds, which runs sharing a busy machine get in equal measure.)

Unlabelled rows (label -1) join each batch as ``unlabelled_fraction`` of it with ``unlabelled=discriminator``:
the discriminator scores them, and the fakes paired with them, by its class-independent term alone, so they
teach realism to the discriminator's features and, through them, to the generator, but never a class.
"""
from __future__ import annotations

import copy
import math
import random
import time
import warnings
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..config import config_to_dict
from ..errors import ConfigError, OutputError
from ..locks import writer_lock
from ..progress import progress_bar, write
from ..provenance import run_record, write_json_atomic
from ..store import HEADER_NAME, PatchStore
from .diffaugment import AdaController, diffaugment
from .checkpoint import capture_rng, check_resumable, restore_rng, save_checkpoint
from .config import TrainConfig
from .data import Batch, ClassBalancedSampler, load_images
from .distributed import Context, distributed
from .diversity import COLLAPSE_RATIO, COLLAPSE_WARMUP, diversity_ratios, pairwise_diversity
from .ema import ema_decay_at, standing_statistics, update_ema
from .grids import class_grid, write_png
from .losses import LeCam, discriminator_hinge_loss, generator_hinge_loss
from .networks import build_discriminator, build_generator
from .run import RunDirectory
from .sampling import generate

#: Samples per class for the diversity signal (and real patches per class it is compared with).
DIVERSITY_SAMPLES = 32
#: Batches (of the training batch size) that standing batch-norm statistics average over; 40 and 100 gave
#: the same fidelity on the CRC cell, so a few dozen are enough.
STANDING_BATCHES = 32


def train(store: PatchStore | str | Path, out: str | Path, config: TrainConfig | None = None, *,
          new: bool = False, progress: bool = True) -> Path:
    """Train the class-conditional GAN on the labelled patches of ``store``; return the run directory ``out``.

    Resumes from ``out/checkpoint.pt`` when there is one, unless ``new`` (which starts over, replacing the
    run's files). Under ``torchrun`` every rank calls this with the same arguments and the process group is
    set up here; only rank 0 touches ``out``.

    Raises ``StoreError`` for a store without labelled patches (or a class without any), ``ConfigError`` for
    options no run can use (such as a patch size without an architecture) and ``CheckpointError`` for a
    damaged checkpoint or one trained on other patches, classes or fixed options.
    """
    store = store if isinstance(store, PatchStore) else PatchStore(store)
    config = (config or TrainConfig()).resolve(store.patch_size)
    fraction = config.unlabelled_fraction if config.unlabelled == "discriminator" else 0.0
    sampler = ClassBalancedSampler(store.labels, store.class_names, config.seed, source=store.path,
                                   unlabelled_fraction=fraction)
    out = Path(out)
    if (out / HEADER_NAME).is_file():
        raise OutputError(out, "is a patch store; a training run needs a directory of its own")
    with distributed(config.device) as context, ExitStack() as stack:
        if config.batch_size % context.world_size:
            raise ConfigError("--batch-size", f"batch_size {config.batch_size} does not split over "
                                              f"{context.world_size} ranks")
        context.from_main(lambda: stack.enter_context(writer_lock(out)))  # rank 0 writes, and holds the lock
        context.from_main(lambda: store.verify(progress=progress))  # the store hash a run records must be true
        state = context.from_main(lambda: _open_run(RunDirectory(out), store, config, new))
        Trainer(store, out, config, sampler, context, progress=progress).run(state)
    return out


def _open_run(run: RunDirectory, store: PatchStore, config: TrainConfig, new: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None after clearing what an earlier run left (on rank 0)."""
    if run.checkpoint.exists() and not new:
        state = run.load_checkpoint()
        check_resumable(state, run.checkpoint, store, config)
        return state
    run.clear()
    run.path.mkdir(parents=True, exist_ok=True)
    return None


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _stream_seed(*parts: int) -> int:
    """A 32-bit seed for one rank's training noise, independent of the seed that initialised the weights."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _finite(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


class Trainer:
    """One process's share of a training run; build with :func:`train` rather than directly."""

    def __init__(self, store: PatchStore, out: Path, config: TrainConfig, sampler: ClassBalancedSampler,
                 context: Context, *, progress: bool) -> None:
        self.store, self.out, self.config, self.sampler, self.context = store, out, config, sampler, context
        self.run_directory = RunDirectory(out)
        self.progress = progress and context.is_main
        self.device = context.device
        self.bf16 = self._use_bf16()
        classes, size = len(store.class_names), store.patch_size
        _seed_everything(config.seed)  # identical initial weights on every rank
        self.generator = build_generator(config, classes, size).to(self.device)
        self.discriminator = build_discriminator(config, classes, size).to(self.device)
        if config.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        betas = (float(config.betas[0]), float(config.betas[1]))
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas)
        self.ada = AdaController(config, self.device)
        self.lecam = LeCam(config.lecam, config.lecam_decay, self.device)
        #: whether the discriminator adds a reconstruction loss of its own (the fastgan preset's)
        self.reconstructs = bool(getattr(self.discriminator, "reconstructs", False))
        self.step = 0
        self.train_seconds = 0.0
        self._sampler_cache: tuple[int, torch.nn.Module] | None = None

    def _use_bf16(self) -> bool:
        """bf16 autocast: by default on CUDA where supported; on the CPU only when asked for, and only where
        oneDNN has bf16 kernels (AVX-512 BF16 or AMX), since emulated bf16 is slower than fp32."""
        if self.device.type == "cuda":
            supported = torch.cuda.is_bf16_supported()
        else:
            supported = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        if self.config.precision == "bf16" and not supported:
            raise ConfigError("--precision", f"precision 'bf16' needs a device with bf16 support, which "
                                             f"{self.device} lacks here")
        if self.device.type == "cuda":
            return supported and self.config.precision != "fp32"
        return self.config.precision == "bf16"

    # -- state -------------------------------------------------------------------------------------------------

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizers, step, augmentation and this rank's RNG states."""
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.lecam.state = state["lecam_state"].to(self.device)
        self.ada.p = float(state["augment_p"])
        if self.context.is_main:  # the sums were reduced over all ranks when saved: they count once
            self.ada.sums.copy_(state["augment_signs"])
        if len(state["rng"]) == self.context.world_size:
            restore_rng(state["rng"][self.context.rank], self.device)
        else:
            warnings.warn(f"{self.out}: checkpoint written by {len(state['rng'])} ranks, resumed on "
                          f"{self.context.world_size}: random streams restart, so this run will not repeat "
                          f"one that ran straight through", RuntimeWarning)
            _seed_everything(_stream_seed(self.config.seed, self.context.rank, self.step))

    def state(self) -> dict[str, Any]:
        """The checkpoint contents; a collective call (every rank contributes its RNG states)."""
        rng = self.context.gather(capture_rng(self.device))
        signs = self.context.all_reduce_sum(self.ada.sums.clone()).cpu()
        return {
            "step": self.step,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.sampling_generator().state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "augment_p": self.ada.p,
            "augment_signs": signs,
            "lecam_state": self.lecam.state.cpu(),
            "train_seconds": self.train_seconds,
            "rng": rng,
            "config": config_to_dict(self.config),
            "class_names": self.store.class_names,
            "patch_size": self.store.patch_size,
            "store_sha256": self.store.content_hash,
            "world_size": self.context.world_size,
        }

    def sampling_generator(self) -> torch.nn.Module:
        """The generator that snapshots and checkpoints sample from: the EMA, with standing batch-norm
        statistics when ``ema_stats`` is 'standing' (measured once per step, from a seed fixed by the run's
        seed and the step, so a resumed run writes what a straight one does). Training never reads it: the
        EMA's statistics are copied from the training generator again at every update."""
        if self.config.ema_stats != "standing":
            return self.ema
        if self._sampler_cache is None or self._sampler_cache[0] != self.step:
            standing = standing_statistics(self.ema, len(self.store.class_names), batches=STANDING_BATCHES,
                                           batch_size=self.config.batch_size,
                                           seed=_stream_seed(self.config.seed, self.step, STANDING_BATCHES))
            self._sampler_cache = (self.step, standing)
        return self._sampler_cache[1]

    def save(self) -> None:
        """Write the checkpoint on rank 0; every rank leaves together, so a finished step is a saved step."""
        state = self.state()
        if self.context.is_main:
            save_checkpoint(self.run_directory.checkpoint, state)
        self.context.barrier()

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self, state: dict[str, Any] | None) -> None:
        """Train from scratch or from ``state`` up to ``config.steps`` or until ``config.time_budget`` is spent."""
        if state is not None:
            self.load(state)
        else:
            _seed_everything(_stream_seed(self.config.seed, self.context.rank))
        start = self.step
        if start >= self.config.steps or self._out_of_time(check=True):
            if self.progress:
                write(f"{self.out}: already trained for {start} steps ({self.train_seconds:.0f} s); raise steps "
                      f"or time-budget to train further")
            if state is not None and (state["config"].get("ema_stats") or "training") != self.config.ema_stats:
                self.save()  # a finished run takes the sampling statistics asked for now (no training needed)
                if self.context.is_main:
                    self._log({"event": "ema statistics rewritten", "step": start,
                               "ema_stats": self.config.ema_stats, "time": _now()})
            return
        generator, discriminator = self.generator, self.discriminator
        if self.config.compile:
            generator.compile()
            discriminator.compile()
        if self.context.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            generator = DistributedDataParallel(generator, device_ids=ids)
            discriminator = DistributedDataParallel(discriminator, device_ids=ids)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        real_diversity = self._begin(start, resumed=state is not None)
        totals = torch.zeros(6, device=self.device)
        interval_start, paused, interval_steps = _clocks(), np.zeros(2), 0
        clock = time.process_time if self.config.budget_clock == "cpu" else time.perf_counter
        loop_start, seconds_before = clock(), self.train_seconds
        # with a time budget the bar counts budget seconds (its ETA is when the budget runs out), else steps
        by_time = bool(self.config.time_budget)
        with progress_bar(total=self.config.time_budget if by_time else self.config.steps,
                          initial=min(self.train_seconds, self.config.time_budget) if by_time else start,
                          unit=f"{self.config.budget_clock}-s" if by_time else "step", desc="train",
                          disable=not self.progress) as bar:
            while self.step < self.config.steps:
                totals += self._train_step(generator, discriminator)
                self.step += 1
                interval_steps += 1
                if self.step % self.ada.interval == 0:
                    self.ada.adjust(self.context.all_reduce_sum)
                spent_before, self.train_seconds = self.train_seconds, seconds_before + clock() - loop_start
                bar.update(self.train_seconds - spent_before if by_time else 1)
                out_of_time = self._out_of_time(check=self.step % self.config.log_every == 0)
                last = self.step == self.config.steps or out_of_time
                record: dict[str, Any] = {}
                if self.step % self.config.log_every == 0 or last:
                    seconds = _clocks() - interval_start - paused
                    record = self._losses(totals / interval_steps, interval_steps, seconds)
                    bar.set_postfix({"step": self.step, "img/s": f"{record['images_per_s']:.0f}",
                                     "D": f"{record['loss_d']:.3f}",
                                     "G": f"{record['loss_g']:.3f}", "p": f"{self.ada.p:.2f}"})
                    totals.zero_()
                    interval_start, paused, interval_steps = _clocks(), np.zeros(2), 0
                pause_start = _clocks()
                if (self.step % self.config.snapshot_every == 0 or last) and self.context.is_main:
                    record.update(self._snapshot(real_diversity))
                if record and self.context.is_main:
                    self._log({"step": self.step, **record})
                if self.step % self.config.checkpoint_every == 0 or last:
                    self.save()
                paused += _clocks() - pause_start
                if out_of_time:
                    if self.context.is_main:
                        self._log({"event": "time budget spent", "step": self.step,
                                   "train_seconds": round(self.train_seconds, 1)})
                    break
        if self.context.is_main:
            self._log({"event": "end", "step": self.step, "time": _now()})

    def _out_of_time(self, *, check: bool) -> bool:
        """Whether ``train_seconds`` has reached the time budget; agreed by every rank (a collective call, so
        ranks compare only when ``check``, every ``log_every`` steps)."""
        if not self.config.time_budget or not check:
            return False
        spent = torch.tensor([float(self.train_seconds >= self.config.time_budget)], device=self.device)
        return bool(self.context.all_reduce_sum(spent).item() > 0)

    def discriminator_loss(self, generator: torch.nn.Module, discriminator: torch.nn.Module, batch: Batch
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hinge loss (plus LeCam when on, and the discriminator's reconstruction loss on the augmented reals
        when it has one) of one discriminator batch: reals of ``batch`` against fakes of its classes, every row
        scored with its label (the class-independent term alone for label -1).

        Returns (loss, LeCam term, reconstruction term, scores of reals, scores of fakes).
        """
        config, device = self.config, self.device
        real = load_images(self.store, batch.indices, device, channels_last=config.channels_last)
        labels = torch.from_numpy(batch.labels).to(device)
        latents = torch.randn(len(labels), config.z_dim, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            with torch.no_grad():
                fake = generator(latents, torch.from_numpy(batch.classes).to(device))
            inputs = diffaugment(torch.cat([real, fake]), self.ada.p, config.diffaugment)
            both = torch.cat([labels, labels])
            if self.reconstructs:
                scores, reconstruction = discriminator(inputs, both, reconstruct=len(real))
            else:
                scores, reconstruction = discriminator(inputs, both), torch.zeros((), device=device)
        real_scores, fake_scores = scores.float().chunk(2)
        reconstruction = reconstruction.float()
        loss = discriminator_hinge_loss(real_scores, fake_scores)
        regulariser = torch.zeros((), device=device)
        if self.lecam.enabled:
            self.lecam.update(real_scores, fake_scores, self.context.all_reduce_sum)
            regulariser = self.lecam.penalty(real_scores, fake_scores)
        return loss + regulariser + reconstruction, regulariser, reconstruction, real_scores, fake_scores

    def _train_step(self, generator: torch.nn.Module, discriminator: torch.nn.Module) -> torch.Tensor:
        """``d_steps`` discriminator updates, then one generator update; returns (loss_d, loss_g, D(real),
        D(fake), LeCam term, reconstruction term) of the last discriminator update."""
        config, device = self.config, self.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)
        for k in range(config.d_steps):
            batch = self.sampler.batch(self.step * config.d_steps + k, config.batch_size, self.context.rank,
                                       self.context.world_size)
            loss_d, regulariser, reconstruction, real_scores, fake_scores = self.discriminator_loss(
                generator, discriminator, batch)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            self.ada.observe(real_scores)
        # the generator's update goes through the bare discriminator with frozen weights: no gradient for D
        # is computed, and none is all-reduced
        self.discriminator.requires_grad_(False)
        labels = torch.from_numpy(batch.labels).to(device)
        latents = torch.randn(len(labels), config.z_dim, device=device)
        with autocast:
            fake = generator(latents, torch.from_numpy(batch.classes).to(device))
            loss_g = generator_hinge_loss(self.discriminator(diffaugment(fake, self.ada.p, config.diffaugment),
                                                             labels).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)
        update_ema(self.ema, self.generator, ema_decay_at(self.step, config.ema_decay))
        return torch.stack([loss_d.detach(), loss_g.detach(), real_scores.detach().mean(),
                            fake_scores.detach().mean(), regulariser.detach(), reconstruction.detach()])

    # -- what a person watches -----------------------------------------------------------------------------------

    def _begin(self, start: int, *, resumed: bool) -> list[float]:
        """Record the run (rank 0): config.json, reals.png, a start or resume event. Returns real diversity."""
        if not self.context.is_main:
            return []
        chosen = [np.random.default_rng([self.config.seed, label]).permutation(members)[:DIVERSITY_SAMPLES]
                  for label, members in enumerate(self.sampler.members)]
        reals = [self.store.images(np.sort(indices)) for indices in chosen]
        real_diversity = [pairwise_diversity(images) for images in reals]
        record = run_record(config_to_dict(self.config), inputs={
            "store": str(self.store.path.resolve()), "store_sha256": self.store.content_hash})
        record.update({"class_names": self.store.class_names, "patch_size": self.store.patch_size,
                       "class_counts": [len(members) for members in self.sampler.members],
                       "unlabelled_count": len(self.sampler.unlabelled),
                       "unlabelled_per_batch": self.sampler.unlabelled_per_batch(self.config.batch_size),
                       "training_slides": sorted(set(map(str, self.store.slides))),
                       "seed": self.config.seed, "device": str(self.device),
                       "precision": "bf16" if self.bf16 else "fp32", "world_size": self.context.world_size,
                       "start_step": start})
        write_json_atomic(self.run_directory.config_file, record)
        reals_file = self.run_directory.reals_file
        if not resumed or not reals_file.exists():
            write_png(class_grid(reals, self.store.class_names, self.config.grid_columns), reals_file)
        if resumed and self.progress:
            write(f"{self.out}: resuming from step {start}")
        self._log({"event": "resume" if resumed else "start", "step": start, "time": _now(),
                   "world_size": self.context.world_size, "device": str(self.device),
                   "real_diversity": dict(zip(self.store.class_names, map(_finite, real_diversity)))})
        return real_diversity

    def _losses(self, means: torch.Tensor, steps: int, seconds: np.ndarray) -> dict[str, Any]:
        """The log record of an interval of ``steps`` steps that took ``seconds`` (wall, CPU) of training."""
        loss_d, loss_g, d_real, d_fake, lecam, reconstruction = means.tolist()
        return {"loss_d": _finite(loss_d), "loss_g": _finite(loss_g), "d_real": _finite(d_real),
                "d_fake": _finite(d_fake), **({"lecam": _finite(lecam)} if self.lecam.enabled else {}),
                **({"reconstruction": _finite(reconstruction)} if self.reconstructs else {}),
                "diffaugment_p": _finite(self.ada.p, 5),
                "ada_rt": _finite(self.ada.last_rt),
                "images_per_s": round(steps * self.config.batch_size / max(seconds[0], 1e-9), 1),
                "images_per_cpu_s": round(steps * self.config.batch_size / max(seconds[1], 1e-9), 1)}

    def _snapshot(self, real_diversity: list[float]) -> dict[str, Any]:
        """Write this step's sample grid and measure per-class diversity; warn on collapsing classes."""
        names, columns = self.store.class_names, self.config.grid_columns
        sampler = self.sampling_generator()
        grid = generate(sampler, np.repeat(np.arange(len(names)), columns), seed=self.config.seed)
        path = self.run_directory.sample_grid(self.step)
        write_png(class_grid(np.split(grid, len(names)), names, columns), path)
        fakes = generate(sampler, np.repeat(np.arange(len(names)), DIVERSITY_SAMPLES), seed=self.config.seed + 1)
        ratios = diversity_ratios(np.split(fakes, len(names)), real_diversity)
        for name, ratio in zip(names, ratios):
            if self.step >= COLLAPSE_WARMUP and ratio < COLLAPSE_RATIO:
                warnings.warn(f"{self.out}: at step {self.step} samples of class {name!r} are {ratio:.2f} times "
                              f"as diverse as its real patches: the generator may be collapsing",
                              RuntimeWarning)
        return {"diversity": dict(zip(names, map(_finite, ratios))),
                "samples": str(path.relative_to(self.out))}

    def _log(self, record: dict[str, Any]) -> None:
        self.run_directory.append_log(record)


def _clocks() -> np.ndarray:
    """Wall and CPU (this process, all threads) seconds now: logs give images per second by both."""
    return np.array([time.perf_counter(), time.process_time()])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
