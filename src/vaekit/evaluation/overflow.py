"""Rows a model cannot score: its distributions overflow on them (torch.distributions refuses a scale of inf or a
loc of NaN). An input far outside the training data does that to intact weights, so before a message blames the
weights these find the rows that did it: where the model scores the others, the rows are named, not the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from ..errors import NonFiniteEstimateError, VaekitError
from ..objectives.estimators import log_weights
from ..parts.distributions import mean_of
from ..rng import forked_rng


def overflows(e: BaseException) -> bool:
    """Whether `e` is torch.distributions refusing a parameter (what every family's check raises)."""
    return isinstance(e, ValueError) and not isinstance(e, VaekitError) and "Expected parameter" in str(e)


def weights_refusal(e: BaseException) -> str:
    """The line for an overflow the run's own data (or no data) meet: the weights are at fault."""
    return (f"the model's weights make an invalid distribution ({refused(e)}); the run's model.safetensors is damaged or "
            "was trained into overflow: retrain, or resume from a good checkpoint")


def training_refusal(e: BaseException) -> str:
    """The line for an overflow in training that no row of the data explains alone: the data's scale, or divergence."""
    return (f"the model's distributions overflow on the data in training ({refused(e)}): values far outside the scale "
            "the networks start at, or training diverged; try data near unit scale (standardized real values), a "
            "smaller learning rate, or gradient clipping")


def refused(e: BaseException) -> str:
    """The first line of torch's refusal, without the tensor it prints: `Expected parameter scale …` (or what was
    not finite)."""
    if isinstance(e, NonFiniteEstimateError):
        return e.what
    return str(e).splitlines()[0].split(" (Tensor")[0].split(" of shape")[0][:160]


@torch.no_grad()
def _fails(model, xb: Tensor, yb: Tensor | None = None) -> Tensor | bool | None:
    """Which rows of xb (labels yb, for a conditional VAE) the model cannot score: True where a distribution of
    Q(z|x), p(z) or p(x|z), at a draw of Q or at its mean, overflows on the batch (which rows: ask one by one), else
    [B] bool, the rows whose log-weight log p(x, z) − log Q(z|x) is NaN or ±inf (None: this model cannot be asked
    so). The draw's randomness is its own: the caller's stream goes on as if this had not run."""
    try:
        with forked_rng(xb.device):
            joint = model.given(yb) if yb is not None else model
            q = joint.posterior(xb)
            lw = log_weights(joint, xb, 1, q_z=q)[0]
            joint.p_x_given_z(mean_of(q))
    except (ValueError, RuntimeError) as e:  # a NaN draw: refused as a value, or as a std by torch.normal
        said = str(e)
        if overflows(e) or "Expected value argument" in said or "expects all elements of std" in said:
            return True
        return None  # a model that needs more than x (a label): not for this to say
    except TypeError:
        return None
    return ~torch.isfinite(lw)


def overflowing_rows(model, x: Tensor, batch_size: int = 256, y: Tensor | None = None) -> list[int]:
    """The rows of x [N, D] (labels y) on which the model makes an invalid distribution or a log-weight that is not
    finite (`_fails`): a batch at a time, row by row within a batch that overflows ([] where none, or none can be
    told)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    rows: list[int] = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(dtype)
        yb = y[start : start + batch_size] if y is not None else None
        failed = _fails(model, xb, yb)
        if failed is True:
            rows += [start + i for i in range(len(xb)) if _one_fails(model, xb[i : i + 1], yb[i : i + 1] if yb is not
                                                                     None else None)]
        elif failed is not None:
            rows += [start + int(i) for i in failed.nonzero()[:, 0]]
    return rows


def any_overflowing(model, chunks: Iterable[tuple[Tensor, Tensor | None]]) -> bool:
    """Whether the model fails (`_fails`) on any row of `chunks` (rows and their labels, a chunk at a time): stops at
    the first chunk that has one, so a question about a run's whole training data costs a pass at most."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return any(_one_fails(model, xb.to(dtype), yb) for xb, yb in chunks)  # any() stops at the first


def split_chunks(dataset, splits: Iterable[str], labelled: bool, device: torch.device | str = "cpu",
                 size: int = 4096) -> Iterator[tuple[Tensor, Tensor | None]]:
    """The rows of `splits` of `dataset` as evaluation sees them (float, one seeded binarization draw), `size` at a
    time with their labels where `labelled`: a memory-mapped run's data are never copied whole."""
    g = torch.Generator().manual_seed(0)
    for name in splits:
        raw = dataset.split(name)
        labels = dataset.labels_of(name) if labelled else None
        for i in range(0, raw.shape[0], size):
            yield (dataset.prepare(raw[i : i + size], generator=g).to(device),
                   labels[i : i + size].to(device) if labels is not None else None)


def _one_fails(model, xb: Tensor, yb: Tensor | None) -> bool:
    failed = _fails(model, xb, yb)
    return failed is True or (failed is not None and bool(failed.any()))


def row_named(source: str, x: Tensor, where: str, schema=None) -> Callable[[int], str]:
    """How a refusal names row i of x: its place in `where` (a split, as vaekit keeps it) and its largest value,
    which finds it in the file whatever order the split keeps; in a table (`schema`, its columns), by the column's name
    and the cell as written (a level's label, not its code)."""
    def named(i: int) -> str:
        row = x[i].flatten()
        j = int(torch.nan_to_num(row.abs(), nan=-1.0).argmax())
        if schema is None or j >= len(schema.columns):
            return f"{source}: example {i} of {where} (its value {float(row[j]):g} at position {j})"
        col, value = schema.columns[j], float(row[j])
        cell = repr(col.levels[int(value)]) if col.levels and value.is_integer() and 0 <= value < len(col.levels) \
            else f"{value:g}"
        return f"{source}: example {i} of {where} (its column {col.name!r}: {cell})"
    return named


@contextlib.contextmanager
def blaming_rows(model, x: Tensor, name: Callable[[int], str],
                 own: Callable[[], Iterable[tuple[Tensor, Tensor | None]]] | None = None,
                 y: Tensor | None = None, otherwise: Callable[[BaseException], str] | None = None) -> Iterator[None]:
    """Run the block; where a distribution overflows in it (or an estimate is not finite), find the rows of x (labels
    y) that do it and refuse naming the first (`name(i)`, e.g. "FILE: line 7"). The data are blamed only where the
    model scores the rows it was trained on (`own()`: those rows and their labels in chunks, read only then): a damaged weight
    also overflows on some rows and not others. Where no row can be found, or the model's own rows overflow too, the
    refusal stands: the weights' message, or `otherwise(e)` (training, where no model.safetensors is at fault)."""
    try:
        yield
    except ValueError as e:
        if not (overflows(e) or isinstance(e, NonFiniteEstimateError)):
            raise
        try:
            mine = own() if own is not None else None
        except VaekitError as unread:  # the run's data are not here: nothing tells the weights from the data
            e.add_note(f"the rows the run was trained on could not be read to tell which ({unread})")
            mine = None
        if mine is not None and any_overflowing(model, mine):
            raise VaekitError(otherwise(e) if otherwise else weights_refusal(e)) from None
        rows = overflowing_rows(model, x, y=y) if mine is not None else []
        if not rows:
            if otherwise is not None:
                raise VaekitError(otherwise(e)) from None
            raise
        more = " and every other one" if len(rows) == len(x) > 1 else f" (and {len(rows) - 1:,} more of its {len(x):,})" \
            if len(rows) > 1 else ""
        rest = "on every row, not on the rows the run was trained on: the values lie far outside them" \
            if len(rows) == len(x) else f"on {'them' if more else 'it'}, not on the other rows nor on the rows the run " \
            "was trained on: the values lie far outside them"
        raise VaekitError(f"{name(rows[0])}{more}: the model's distributions overflow {rest} ({refused(e)})") \
            from None
