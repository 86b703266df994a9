"""Data-parallel training over the processes torch's launcher starts (``torchrun``, one per GPU).

A trainer asks :func:`start` for its place (rank, world size) and device. Outside torchrun the
world is one process and nothing changes. Under torchrun every process builds the same model,
:func:`wrap` puts it in ``DistributedDataParallel`` (gradients averaged across processes), each
process takes its :func:`shard` of every epoch's images, :func:`total` sums the logged losses,
and only the main process writes files (the others wait at :func:`barrier`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from samdpo.errors import ConfigError


@dataclass(frozen=True)
class Place:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True for the process that logs and writes files."""
        return self.rank == 0


def place_from_environment() -> Place:
    """The place torchrun describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (one process without them)."""
    try:
        place = Place(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )
    except ValueError as exc:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from exc
    if place.world < 1 or not 0 <= place.rank < place.world:
        raise ConfigError(f"rank {place.rank} is not within a world of {place.world} processes")
    return place


def start(device: torch.device) -> tuple[Place, torch.device]:
    """Join the process group when launched by torchrun; returns the place and the device to use.

    Args:
        device: the device a single process would use (``cuda`` or ``cpu``).

    Returns:
        ``(place, device)``: on GPUs each process gets ``cuda:LOCAL_RANK`` (NCCL); on the CPU
        the processes share it (Gloo, as the tests run it).

    Raises:
        ConfigError: more processes on this machine than visible GPUs.
    """
    place = place_from_environment()
    if place.world == 1:
        return place, device
    if device.type == "cuda":
        if place.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {place.local_rank} on this machine but only {torch.cuda.device_count()} GPUs are visible"
            )
        torch.cuda.set_device(place.local_rank)
        device = torch.device("cuda", place.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return place, device


def wrap(module: nn.Module, place: Place, device: torch.device) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` when there are several processes, else itself.

    Unused parameters are allowed: SAM's mask-prompt downscaling never runs (no mask prompts), and
    switched-off prompts leave their text projections and embeddings out of the graph.
    """
    if place.world == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def shard(order: Sequence[int], place: Place) -> list[int]:
    """This process's items of an epoch's ``order``: every world-th, the list first padded by wrapping
    around so that all processes take the same number of steps (as ``DistributedSampler`` does)."""
    items = [int(i) for i in order]
    if place.world == 1 or not items:
        return items
    size = -(-len(items) // place.world) * place.world
    padded = (items * (size // len(items) + 1))[:size]
    return padded[place.rank :: place.world]


def total(values: Sequence[float], place: Place, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all processes (the values themselves for one process);
    ``device`` is the process's device (NCCL reduces on the GPU)."""
    if place.world == 1:
        return [float(v) for v in values]
    array = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(array)
    return array.cpu().tolist()


def barrier(place: Place) -> None:
    """Wait for every process (no-op for one)."""
    if place.world > 1:
        dist.barrier()


def finish(place: Place) -> None:
    """Leave the process group (no-op for one process)."""
    if place.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
