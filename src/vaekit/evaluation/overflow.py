"""Rows a model cannot score: its distributions overflow on them (torch.distributions refuses a scale of inf or a
loc of NaN). An input far outside the training data does that to intact weights, so before a message blames the
weights these find the rows that did it: where the model scores the others, the rows are named, not the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..errors import VaekitError
from ..parts.distributions import mean_of
from ..rng import forked_rng


def overflows(e: BaseException) -> bool:
    """Whether `e` is torch.distributions refusing a parameter (what every family's check raises)."""
    return isinstance(e, ValueError) and not isinstance(e, VaekitError) and "Expected parameter" in str(e)


def weights_refusal(e: BaseException) -> str:
    """The line for an overflow the run's own data (or no data) meet: the weights are at fault."""
    return (f"the model's weights make an invalid distribution ({refused(e)}); the run's model.safetensors is damaged or "
            "was trained into overflow: retrain, or resume from a good checkpoint")


def refused(e: BaseException) -> str:
    """The first line of torch's refusal, without the tensor it prints: `Expected parameter scale …`."""
    return str(e).splitlines()[0].split(" (Tensor")[0].split(" of shape")[0][:160]


@torch.no_grad()
def _fails(model, xb: Tensor) -> bool | None:
    """Whether Q(z|x), or p(x|z) at Q's mean or at a draw of it, overflows on the rows xb (None: this model cannot be
    asked so). The draw's randomness is its own: the caller's stream goes on as if this had not run."""
    try:
        with forked_rng(xb.device):
            q = model.posterior(xb)
            model.p_x_given_z(torch.stack([mean_of(q), q.sample()]))
    except ValueError as e:
        return True if overflows(e) else None
    except (TypeError, RuntimeError, VaekitError):  # a model that needs more than x (a label): not for this to say
        return None
    return False


def overflowing_rows(model, x: Tensor, batch_size: int = 256) -> list[int]:
    """The rows of x [N, D] on which the model's posterior, or its decoder at the posterior's mean, makes an invalid
    distribution: a batch at a time, row by row within a batch that has one ([] where none, or none can be told)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    rows: list[int] = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(dtype)
        if _fails(model, xb):
            rows += [start + i for i in range(len(xb)) if _fails(model, xb[i : i + 1])]
    return rows


@contextlib.contextmanager
def blaming_rows(model, x: Tensor, name: Callable[[int], str],
                 own: Callable[[], Tensor | None] | None = None) -> Iterator[None]:
    """Run the block; where a distribution overflows in it, find the rows of x that do it and refuse naming the
    first (`name(i)`, e.g. "FILE: line 7"). The data are blamed only where the model scores rows of its own data
    (`own()`, a part of its training data, read only then): a damaged weight also overflows on some rows and not
    others. Where no row
    can be found, or its own data overflow too, the refusal stands (the weights' message)."""
    try:
        yield
    except ValueError as e:
        if not overflows(e):
            raise
        try:
            mine = own() if own is not None else None
        except VaekitError:  # the run's data are not here: nothing tells the weights from the data
            mine = None
        if mine is not None and len(mine) and overflowing_rows(model, mine):
            raise VaekitError(weights_refusal(e)) from None
        rows = overflowing_rows(model, x) if mine is not None and len(mine) else []
        if not rows:
            raise
        more = " and every other one" if len(rows) == len(x) > 1 else f" (and {len(rows) - 1:,} more of its {len(x):,})" \
            if len(rows) > 1 else ""
        rest = "on every row, not on the run's own data: the values lie far outside what it was trained on" \
            if len(rows) == len(x) else f"on {'them' if more else 'it'}, not on the other rows nor on the run's own " \
            "data: the values lie far outside what it was trained on"
        raise VaekitError(f"{name(rows[0])}{more}: the model's distributions overflow {rest} ({refused(e)})") \
            from None
