"""torch.distributed helpers: detect a torchrun launch, shard work, all-reduce sums, gather a batch.

Launch the way the field does; vaekit reads RANK, LOCAL_RANK and WORLD_SIZE from the environment:

    torchrun --standalone --nproc-per-node=N -m vaekit train --out RUN …                 # one machine
    torchrun --nnodes=M --node-rank=R --rdzv-endpoint=HOST:PORT --nproc-per-node=N \\
             -m vaekit train --out RUN …                                                 # M machines

On CPU the backend is gloo (set OMP_NUM_THREADS so that N × threads ≤ cores), on GPU nccl with
the device chosen from LOCAL_RANK before the process group starts. A plain `vaekit train` never
touches this module's process group: `SINGLE` stands for "one process".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import VaekitError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Context()


def from_env() -> Context | None:
    """The torchrun context, or None when the environment does not describe one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return Context(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def launched(device: str = "cpu", timeout_s: float = 300.0) -> Iterator[Context]:
    """Join the process group torchrun set up (if any) and always leave it (`destroy_process_group`).

    `timeout_s` bounds how long a collective waits for a rank that died, so a failure ends the job.
    """
    ctx = from_env()
    if ctx is None or ctx.world_size == 1:
        yield SINGLE if ctx is None else ctx
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        try:
            yield ctx
        except RuntimeError as e:  # a collective broken by a rank that died (its own error says why): one line here
            if not broken_collective(e):  # this rank's own error: itself
                raise
            raise VaekitError(f"rank {ctx.rank}: lost contact with another rank, which probably failed (see its "
                              f"error): {(str(e).splitlines() or [type(e).__name__])[0][:200]}") from None
        # Leave together: a rank tearing down gloo while its peer still talks to it can abort the peer.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def broken_collective(e: BaseException) -> bool:
    """Whether `e` is a collective that failed because another process went away (gloo's closed connection, NCCL's
    abort, a timeout), not an error of this process's own (a shape, a plugin's bug, memory)."""
    said = str(e)
    return isinstance(e, getattr(dist, "DistError", ())) or any(
        sign in said for sign in ("gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe", "timed out",
                                  "Timed out"))


def shard_indices(perm: Tensor, ctx: Context, batch_size: int) -> Tensor:
    """This rank's examples, in order: each global batch of world × `batch_size` examples of `perm` is
    split into contiguous blocks, block `rank` to this rank (the last, shorter global batch too).

    `perm` is first trimmed to a multiple of the world size, so every rank takes the same number of
    steps (uneven counts would leave one rank waiting in an all-reduce forever) and a rank's last
    batch holds exactly its share of the global one. Contiguous blocks let a rank draw the noise of
    the whole global batch as one process would and keep its own block (`loss.VAEObjective`).
    """
    if not ctx.distributed:
        return perm
    world, rank = ctx.world_size, ctx.rank
    perm = perm[: perm.shape[0] // world * world]
    whole = perm.shape[0] // (world * batch_size) * (world * batch_size)
    full = perm[:whole].reshape(-1, world, batch_size)[:, rank].reshape(-1)
    last = perm[whole:].reshape(world, -1)[rank]
    return torch.cat([full, last])


def all_reduce_sum(t: Tensor, ctx: Context) -> Tensor:
    """Sum `t` over ranks in place (a no-op in one process)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def agreed(signum: int, ctx: Context, device: torch.device) -> int:
    """The signal any rank received (the largest; 0 for none), the same on every rank after the same step: so
    all stop there and every rank's running sums can be gathered into one checkpoint."""
    if not ctx.distributed:
        return signum
    flag = torch.tensor([signum], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def every_rank(t: Tensor, ctx: Context) -> Tensor:
    """[world, *t.shape]: `t` of every rank, in rank order (`t` itself, unsqueezed, in one process)."""
    if not ctx.distributed:
        return t.unsqueeze(0)
    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.stack(parts)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def gather_batch(t: Tensor, ctx: Context, dim: int = 0) -> Tensor:
    """The whole global batch of `t` (this rank's block, b long on `dim`) as one process holds it,
    world·b long, blocks in rank order (`shard_indices`); `t` itself in one process. Differentiable: the gradient
    reaching each block is summed over the ranks, so a batch statistic that every rank computes
    identically over the gathered batch (a covariance, an aggregate posterior) gets, after DDP's
    average, exactly the gradient one process computes. Every rank's block has the same size."""
    if not ctx.distributed:
        return t
    return _Gather.apply(t.movedim(dim, 0), ctx.rank, ctx.world_size).movedim(0, dim)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(saved, t: Tensor, rank: int, world: int) -> Tensor:
        t = t.contiguous()
        blocks = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(blocks, t)
        saved.rank, saved.size = rank, t.shape[0]
        return torch.cat(blocks)

    @staticmethod
    def backward(saved, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's use of this block
        return grad[saved.rank * saved.size : (saved.rank + 1) * saved.size], None, None


def resolve_device(name: str, flag: str = "--device") -> str:
    """cpu | cuda | cuda:N | auto (cuda where available, else cpu); under torchrun, cuda:LOCAL_RANK. `flag`: how
    the caller names the setting in its one-line refusal."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cpu:") and name[4:].isdigit():  # torch's name of the one CPU device (torch.device("cpu", 0))
        name = "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VaekitError(f"{flag} {name}: this torch build or machine has no CUDA device")
        ctx = from_env()
        if name == "cuda" and ctx is not None:
            name = f"cuda:{ctx.local_rank}"
    elif name != "cpu":
        raise VaekitError(f"{flag} {name!r}: use cpu, cuda, cuda:N or auto")
    return name
