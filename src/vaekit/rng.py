"""Derived seeds and forked random number generators: the one home of vaekit's randomness rules.

Training noise comes from torch's global generator, seeded once by the run's seed and saved in every
checkpoint (so a resumed run continues the same stream; on a GPU a CUDA-graphed step replays fresh
Philox offsets, which a per-step reseed could not be captured with). Everything else that is random
(an epoch's order, evaluation, pictures) derives its own seed from (seed, index) and runs under a
forked generator, so it never disturbs the training stream.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SEEDS = 2**63  # torch's generators take a seed below this
MAX_SEED = _SEEDS - 1  # the largest seed a user may give (torch.manual_seed's and numpy's generators')
_STRIDE = 1_000_003  # a prime: (seed, index) pairs map to distinct seeds for any index below it


def derive_seed(seed: int, index: int) -> int:
    """The seed of item `index` (an epoch, an evaluation batch) of a run seeded by `seed`."""
    return (seed * _STRIDE + index) % _SEEDS  # unchanged below 2^63 / STRIDE; beyond it, still a seed torch takes


def batch_seed(seed: int, b: int) -> int:
    """The RNG seed of evaluation batch b."""
    return derive_seed(seed, b)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of examples in `epoch`: a function of (seed, epoch) only, so a resumed run sees the same."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch))
    return torch.randperm(n, generator=g)


def forked_rng(device: torch.device | str):
    """`torch.random.fork_rng` for the CPU and `device`: seeding inside leaves the caller's RNG, the
    training noise on a GPU included, exactly as it was."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)
