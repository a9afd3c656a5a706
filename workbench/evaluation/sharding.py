"""Scale-out of an evaluation over processes with torch.distributed: who runs which item.

The same command runs alone or under a launcher that sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`MASTER_ADDR` and `MASTER_PORT` (torchrun, `accelerate launch`):

    workbench eval librispeech-test-clean --data /data/LibriSpeech --model /models/Qwen-Audio --out runs/ls
    torchrun --nproc-per-node 8 -m workbench.cli eval librispeech-test-clean --data … --model … --out runs/ls

Item i goes to rank i % world_size (rank-disjoint, and the same split on every rerun with the same
world size); each rank appends its records to `out/records.rank{R}.jsonl`; after a barrier rank 0
merges every record file in item order into `out/records.jsonl` and scores. On CUDA each rank loads
the model on `cuda:LOCAL_RANK`. A rerun with another world size still reuses every finished item:
records are found by key in any `records*.jsonl`, whichever rank wrote them.

Several nodes: start the same command on every node with the node count, this node's rank and one
rendezvous endpoint; `--out` (and `--data`, `--model`) must be on a filesystem every node sees at
the same path (NFS, Lustre, a mounted bucket), since rank 0 reads the other ranks' files:

    # on each of 2 nodes with 8 GPUs; NODE_RANK is 0 on the first node, 1 on the second
    torchrun --nnodes 2 --nproc-per-node 8 --node-rank $NODE_RANK \\
        --rdzv-backend c10d --rdzv-endpoint node0.example:29500 --rdzv-id qa-eval \\
        -m workbench.cli eval clotho-aqa --data /shared/ClothoAQA --model /shared/Qwen-Audio --out /shared/runs/aqa

The process group is gloo unless the caller already initialised one: the runner exchanges only a
few small Python objects (keys, timings, the batch check) and barriers, never tensors, so it needs
neither NCCL nor a GPU for its messages; a caller's NCCL group is left alone and a gloo group is
created beside it for these messages.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# A rank that resumed with few items left waits at the barrier for the others, possibly for hours:
# the default 30 min process-group timeout would kill a long evaluation that is going fine.
BARRIER_TIMEOUT = datetime.timedelta(hours=48)

_GROUP: Any = None          # the gloo group the runner's messages go through (None: the default group)
_OWNS_DEFAULT_GROUP = False  # True when `setup()` initialised the default group (so `teardown()` ends it)


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: rank `rank` of `world_size`, GPU `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside a world of {self.world_size} processes")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def indices(self, n_items: int) -> list[int]:
        """The item indices this rank runs: i % world_size == rank."""
        return list(range(self.rank, n_items, self.world_size))

    @property
    def records_name(self) -> str:
        """The file this rank appends to: the final `records.jsonl` itself when alone."""
        return f"records.rank{self.rank}.jsonl" if self.distributed else "records.jsonl"

    def device(self) -> str | None:
        """Where this rank's model goes: `cuda:LOCAL_RANK` on a CUDA machine, else the loader's default."""
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer "
                         "(torchrun and accelerate set it)") from None


def setup() -> Shard:
    """The current shard; under a launcher (WORLD_SIZE > 1) initialise torch.distributed once.

    Idempotent: a second call returns the same shard. An already initialised default group (e.g.
    by accelerate) is used as it is."""
    global _GROUP, _OWNS_DEFAULT_GROUP
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
        if world > 1:
            if not dist.is_available():
                raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
            for name in ("MASTER_ADDR", "MASTER_PORT"):
                if not os.environ.get(name):
                    raise RuntimeError(f"WORLD_SIZE={world} but {name} is not set: start the command with "
                                       "torchrun or accelerate launch, which set it")
            dist.init_process_group(backend="gloo", rank=rank, world_size=world, timeout=BARRIER_TIMEOUT)
            _OWNS_DEFAULT_GROUP = True
    shard = Shard(rank=rank, world_size=world, local_rank=_env_int("LOCAL_RANK", rank if world > 1 else 0))
    if shard.distributed and _GROUP is None:
        # Every rank reaches this line in the same order (collective), so the group is consistent.
        _GROUP = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT) \
            if dist.get_backend() != "gloo" else dist.group.WORLD
    if shard.distributed and torch.cuda.is_available():
        torch.cuda.set_device(shard.local_rank)
    return shard


def barrier(shard: Shard) -> None:
    if shard.distributed:
        dist.barrier(group=_GROUP)


def gather(shard: Shard, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (one item when alone)."""
    if not shard.distributed:
        return [obj]
    objects: list[Any] = [None] * shard.world_size
    dist.all_gather_object(objects, obj, group=_GROUP)
    return objects


def broadcast(shard: Shard, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not shard.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_GROUP)
    return box[0]


def teardown() -> None:
    """End the process group if `setup()` started it (the CLI calls this on exit)."""
    global _GROUP, _OWNS_DEFAULT_GROUP
    if _OWNS_DEFAULT_GROUP and dist.is_initialized():
        dist.destroy_process_group()
    _GROUP, _OWNS_DEFAULT_GROUP = None, False
