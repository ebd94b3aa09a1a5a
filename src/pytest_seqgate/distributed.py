"""Multi-process evaluation on torch.distributed, as launched by torchrun.

Each rank predicts a contiguous shard of the eval set: rank r of W takes
samples [r*N//W, (r+1)*N//W), which covers every sample exactly once whatever
N is (no DistributedSampler padding, which would count repeated samples
twice). The shards' outputs are all-gathered in rank order, so every rank
holds the predictions of the whole set, computes the same metrics and reaches
the same gate verdict; only rank 0 prints and writes reports.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pytest_seqgate import exceptions

_gather_group_made: Any = None


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not under torchrun. Joins the process group
    on first use, with gloo even on GPUs: what the ranks exchange is each one's
    predictions, small CPU tensors, and gloo, unlike NCCL, does not need a GPU of
    its own per rank."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _gather_group() -> Any:
    """The group to gather CPU objects on: the default one when it is gloo; else
    (a process group the user's code started with NCCL) one gloo group over the
    same ranks, made once. NCCL would move the objects to whatever GPU is current
    on each rank, which is the same one for every rank unless set_device ran."""
    global _gather_group_made
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if _gather_group_made is None:
        _gather_group_made = dist.new_group(backend="gloo")
    return _gather_group_made


def is_main() -> bool:
    """Rank 0, or no torchrun at all: the process that reports."""
    return int(os.environ.get("RANK", "0")) == 0


def local_device() -> str | None:
    """Under torchrun on a machine with GPUs, rank ``LOCAL_RANK``'s own GPU, or with
    more ranks than GPUs, the GPUs in turn (``LOCAL_RANK`` modulo their count);
    else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return None


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    return n * rank // size, n * (rank + 1) // size


def _told(exc: Exception) -> tuple[str, str]:
    """What another rank needs to raise the same error: the plugin's own kind of
    error and its message (a user's exception class may not unpickle there)."""
    kind = type(exc).__name__
    if isinstance(exc, exceptions.SeqgateError) and hasattr(exceptions, kind):
        return kind, str(exc)
    return "RuntimeError", f"{kind}: {exc}{exceptions.raised_at(exc)}"


def sharded(n: int, compute: Callable[[Tensor], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Run ``compute(indices)`` on this rank's shard of ``range(n)`` and all-gather the
    results in rank order: every rank gets the tensors for all n samples.

    A rank whose shard raised still takes part in the gather, with its error in
    place of its tensors, and every rank raises it: alone, it left the others
    waiting in the gather until torchrun killed them, and rank 0, which writes
    the reports, died without one."""
    rank, size = world()
    if size == 1:
        return compute(torch.arange(n))
    import torch.distributed as dist

    start, end = shard(n, rank, size)
    local: dict[str, Tensor] = {}
    failure: Exception | None = None
    try:
        local = {k: v.cpu() for k, v in compute(torch.arange(start, end)).items()}
    except Exception as exc:
        failure = exc
    parts: list[Any] = [None] * size
    told = None if failure is None else _told(failure)
    dist.all_gather_object(parts, (local, told), group=_gather_group())
    if failure is not None:
        raise failure
    for other, (_, error) in enumerate(parts):
        if error is not None:
            kind, message = error
            raised = getattr(exceptions, kind, RuntimeError)
            raise raised(f"on rank {other} of {size}: {message}")
    out: dict[str, Tensor] = {}
    for key, value in local.items():
        pieces = [part[key] for part, _ in parts]
        out[key] = torch.cat(pieces) if value.dim() > 0 else value
    return out
