"""The little the evaluators need from torch.distributed: rank, world size, gather, sum.

Works unchanged in one process (no process group) and under `accelerate launch` / torchrun, where
the launcher (or `accelerate.PartialState()`) has initialised the default process group.
"""

import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    return (dist.get_rank(), dist.get_world_size()) if _active() else (0, 1)


def gather_objects(obj) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (returned for convenience); a no-op in one process."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
