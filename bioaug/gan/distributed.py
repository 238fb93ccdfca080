"""Single-process or ``torchrun`` training through one small interface.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`distributed` joins the process group itself:
NCCL with one GPU per process on CUDA, gloo on CPU. When a node runs more processes than it has GPUs (a
two-process smoke test on one GPU), processes share GPUs round-robin and use gloo, since NCCL refuses two
ranks on one device. Rank 0 owns the run directory; other ranks never touch
it and receive what rank 0 reads (a checkpoint) by broadcast, so nodes need not share a file system for it.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from .. import errors
from ..devices import resolve_device
from ..errors import BioaugError

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process trains and which share of the work is its own."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and prints."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all ranks (in place; returned for chaining)."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def gather(self, value: T) -> list[T]:
        """``value`` from every rank, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def from_main(self, function: Callable[[], T]) -> T:
        """Run ``function`` on rank 0 and give its result, or raise its ``BioaugError``, on every rank.

        Errors travel as (class name, source, problem) because ``BioaugError`` does not pickle, and so that no
        rank is left waiting for a broadcast that a failed rank 0 would never send.
        """
        if self.world_size == 1:
            return function()
        payload: list[Any] = [None]
        if self.is_main:
            try:
                payload[0] = ("ok", function())
            except BioaugError as exc:
                payload[0] = ("error", (type(exc).__name__, exc.source, exc.problem))
        dist.broadcast_object_list(payload, src=0)
        status, value = payload[0]
        if status == "error":
            name, source, problem = value
            raise getattr(errors, name)(source, problem)
        return value


def _device(choice: str, local_rank: int) -> torch.device:
    """The device ``choice`` resolves to; on CUDA, the GPU of this node's ``local_rank`` (round-robin)."""
    if resolve_device(choice).type != "cuda":
        return torch.device("cpu")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def choose_backend(device: torch.device) -> str:
    """NCCL when every local process has a GPU of its own, else gloo (CPU training or shared GPUs)."""
    if device.type != "cuda":
        return "gloo"
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_processes > torch.cuda.device_count():
        warnings.warn(f"{local_processes} processes share {torch.cuda.device_count()} GPU(s): using gloo, which "
                      f"checks the distributed path but is no faster than one process", RuntimeWarning)
        return "gloo"
    return "nccl"


@contextmanager
def distributed(device_choice: str) -> Iterator[Context]:
    """This process's :class:`Context`, inside the ``torchrun`` process group when there is one.

    A group that the caller already initialised is used and left open; one created here is destroyed on exit.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(device_choice, local_rank)
    if world_size == 1:
        yield Context(0, 1, device)
        return
    created = not dist.is_initialized()
    if created:
        backend = choose_backend(device)
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    try:
        yield Context(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if created:
            dist.destroy_process_group()
