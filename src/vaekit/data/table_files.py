"""Reading tables: CSV (the standard library's csv) and Parquet (pyarrow) files as cells, a `Table` of codes
under a schema (`tables.py`: inferred, overridden, or a run's), and the packaged penguins CSV."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import VaekitError
from .tables import KINDS, Schema, encode, infer, override

MAX_TABLE_BYTES = 1 << 31  # a CSV larger than 2 GiB is refused before it is read


@dataclass
class Table:
    """A table read from a file: its codes [N, C] (float32, NaN where missing), its schema, and where
    each row came from (`lines`: the file's line numbers, for messages)."""

    codes: Tensor
    schema: Schema
    lines: np.ndarray

    @property
    def mask(self) -> Tensor:
        """True where a cell is observed, [N, C]."""
        return ~self.codes.isnan()


def read_rows(path: Path) -> tuple[list[str], list[list[Any]], list[int]]:
    """(column names, rows of cells, each row's line in the file) of a CSV with a header, or of a Parquet
    file (pyarrow: `pip install vaekit[tables]`)."""
    _check_regular(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise VaekitError(f"{path}: reading Parquet needs pyarrow: pip install 'vaekit[tables]'") from None
        try:
            t = pq.read_table(path)
        except (OSError, ValueError, TypeError, pa.ArrowException) as e:  # pyarrow's own types for a bad file
            raise VaekitError(f"{path}: cannot read as Parquet ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                              ) from None
        data = [t.column(i).to_pylist() for i in range(t.num_columns)]
        return list(t.column_names), [list(r) for r in zip(*data)], list(range(1, t.num_rows + 1))
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise VaekitError(f"{path}: the file is empty; a table needs a header row of column names")
            names = [h.strip() for h in header]
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line
                if len(row) != len(names):
                    raise VaekitError(f"{path}: line {reader.line_num} has {len(row)} cells; the header names "
                                      f"{len(names)} columns")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise VaekitError(f"{path}: not UTF-8 text; save the table as UTF-8") from None
    except csv.Error as e:
        raise VaekitError(f"{path}: not a CSV table ({e})") from None
    _check_names(path, names)
    return names, rows, lines


def _check_regular(path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise VaekitError(f"{path}: cannot read ({e.strerror})") from None
    if not (st.st_mode & 0o170000 == 0o100000):
        raise VaekitError(f"{path}: not a regular file")
    if st.st_size > MAX_TABLE_BYTES:
        raise VaekitError(f"{path}: {st.st_size} bytes; tables up to {MAX_TABLE_BYTES} bytes are read")


def _check_names(path: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        if not name:
            raise VaekitError(f"{path}: column {i + 1} of the header has no name")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise VaekitError(f"{path}: the header names column {dup!r} twice")


def load_overrides(schema_file: str | None, column_types: Sequence[str]) -> dict[str, Any]:
    """{column: kind or {"kind", "levels"}} from a `--schema FILE` (JSON) and `--column-type NAME=KIND` (these last)."""
    given: dict[str, Any] = {}
    if schema_file:
        path = Path(schema_file)
        _check_regular(path)
        if path.stat().st_size > 1 << 20:
            raise VaekitError(f"{path}: a schema file larger than 1 MiB")
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise VaekitError(f"{path}: not a JSON schema ({e})") from None
        if not isinstance(given, dict):
            raise VaekitError(f"{path}: expected {{column: kind or {{'kind': …, 'levels': [...]}}}}, got "
                              f"{type(given).__name__}")
    for item in column_types:
        name, sep, kind = item.partition("=")
        if not sep or not name.strip():
            raise VaekitError(f"column_types: {item!r}: write NAME=KIND, KIND one of {', '.join(KINDS)}")
        given[name.strip()] = kind.strip()
    return given


def read_table(path: str | Path, schema: Schema | None = None, overrides: Mapping[str, Any] | None = None) -> Table:
    """A CSV or Parquet table as codes and its schema: `schema` (a run's, to read new rows its way: the
    columns by name, unknown levels refused) or one inferred, with the user's `overrides` by column name."""
    path = Path(path)
    names, rows, lines = read_rows(path)
    if not rows:
        raise VaekitError(f"{path}: the table has a header and no rows")
    if schema is not None:
        missing = [n for n in schema.names if n not in names]
        if missing:
            raise VaekitError(f"{path}: no column {missing[0]!r}; the run's table has {', '.join(schema.names)}")
        order = [names.index(n) for n in schema.names]
        rows = [[r[j] for j in order] for r in rows]
        return Table(encode(schema.names, rows, lines, schema, str(path)), schema, np.asarray(lines))
    overrides = dict(overrides or {})
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise VaekitError(f"{path}: the schema names column {unknown[0]!r}, which the table does not have "
                          f"(it has {', '.join(names[:12])}{', …' if len(names) > 12 else ''})")
    columns = []
    for j, name in enumerate(names):
        cells = [r[j] for r in rows]
        try:
            col = infer(name, cells)
            if name in overrides:
                col = override(col, overrides[name], cells, "--schema/--column-type")
        except VaekitError as e:
            raise VaekitError(f"{path}: {e}") from None
        columns.append(col)
    schema = Schema(tuple(columns))
    return Table(encode(names, rows, lines, schema, str(path)), schema, np.asarray(lines))


def penguins_csv() -> Path:
    """The Palmer penguins CSV that the `palmerpenguins` package ships (Horst, Hill & Gorman 2020), found
    without importing the package (it imports pandas)."""
    import importlib.util

    spec = importlib.util.find_spec("palmerpenguins")
    if spec is None or not spec.submodule_search_locations:
        raise VaekitError("dataset penguins needs the palmerpenguins package: pip install 'vaekit[tables]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "penguins.csv"
