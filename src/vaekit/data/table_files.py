"""Reading tables: CSV (the standard library's csv) and Parquet (pyarrow) files as cells, a `Table` of codes
under a schema (`tables.py`: inferred, overridden, or a run's), and the packaged penguins CSV."""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import VaekitError
from ..files import json_loads, read_capped
from .parquet_pages import Malformed, page_sizes
from .tables import KINDS, Schema, encode, infer, override

MAX_TABLE_BYTES = 1 << 30  # a table is read whole (then kept as float32 codes): larger files are refused unread
MAX_TABLE_CELLS = 20_000_000  # each cell is a Python object while read (≈ 60 bytes): ≈ 1.2 GB at most, whatever
# the file's compression (a 31 kB Parquet file held 9,000,000 cells)
MAX_SCHEMA_BYTES = 1 << 20


@dataclass
class Table:
    """A table read from a file: its codes [N, C] (float32, NaN where missing, the schema's columns), its schema,
    the file's column names and cells as read (`names`, `cells`: what `vaekit impute` writes back untouched) and
    each row's line in the file (`lines`, for messages)."""

    codes: Tensor
    schema: Schema
    lines: np.ndarray
    names: list[str]
    cells: list[list[Any]]


def _read_rows(path: Path) -> tuple[list[str], list[list[Any]], list[int]]:
    """(column names, rows of cells, each row's line in the file) of a CSV with a header, or of a Parquet
    file (pyarrow: `pip install vaekit[tables]`): a regular file of at most MAX_TABLE_BYTES (`read_capped`)."""
    try:
        data = read_capped(path, MAX_TABLE_BYTES)
    except OSError as e:
        raise VaekitError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise VaekitError(f"{path}: reading Parquet needs pyarrow: pip install 'vaekit[tables]'") from None
        try:
            parquet = pq.ParquetFile(pa.BufferReader(data))
            meta = parquet.metadata  # the cells' count, before any is decoded
            _check_cells(path, meta.num_rows, meta.num_columns)
            _check_names(path, [str(n).strip() for n in parquet.schema_arrow.names])  # as a CSV's header is checked
            texts = set()  # text columns, dictionary-encoded ones too
            for field in parquet.schema_arrow:  # numbers, text, booleans; a date, a list or bytes is no cell vaekit
                kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type  # reads: refused
                if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                    texts.add(field.name)
                if not any(test(kind) for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                                                   pa.types.is_string, pa.types.is_large_string, pa.types.is_null)):
                    raise VaekitError(f"{path}: column {field.name!r} is of type {field.type}; vaekit reads columns of "
                                      "numbers, text or booleans (convert it, or drop it)")  # before it is decoded
            text = [f.name for f in parquet.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            _check_sizes(path, meta, texts, data)
            t = pq.read_table(pa.BufferReader(data), read_dictionary=text, use_threads=False)  # text stays encoded until
            # measured; no thread pool (a refused table then sometimes aborted at exit: SIGABRT, not exit status 2)
            _check_text(path, t)
            t = t.cast(pa.schema([pa.field(f.name, f.type.value_type) if f.name in text else f for f in t.schema]))
        except VaekitError:
            raise
        except (OSError, ValueError, TypeError, pa.ArrowException) as e:  # pyarrow's own types for a bad file
            raise VaekitError(f"{path}: cannot read as Parquet ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                              ) from None
        columns = [t.column(i).to_pylist() for i in range(t.num_columns)]
        return list(t.column_names), [list(r) for r in zip(*columns)], list(range(1, t.num_rows + 1))
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
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
            longest = max(row, key=len)
            if len(longest) > MAX_CELL:  # as for Parquet: a cell is a number, a boolean or a label
                raise VaekitError(f"{path}: line {reader.line_num} holds a cell of {len(longest):,} characters (column "
                                  f"{row.index(longest) + 1}); vaekit reads numbers, booleans and labels of at most "
                                  f"{MAX_CELL:,}")
            rows.append(row)
            lines.append(reader.line_num)
            if len(rows) % 4096 == 0:
                _check_cells(path, len(rows), len(names))
        _check_cells(path, len(rows), len(names))
    except UnicodeDecodeError:
        raise VaekitError(f"{path}: not UTF-8 text; save the table as UTF-8") from None
    except csv.Error as e:
        raise VaekitError(f"{path}: not a CSV table ({e})") from None
    _check_names(path, names)
    return names, rows, lines


MAX_CELL = 1000  # characters of a text cell: a number, a boolean or a category's label, never longer


def _check_text(path: Path, t: Any) -> None:
    """A Parquet file's text cells, measured before they are decoded: a 1.6 KB file of one 10,000-character value
    repeated 100,000 times is 1 GB of text (3 GB of memory read), a few KB more ran a machine out of memory."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for name, column in zip(t.column_names, t.columns):
        if not pa.types.is_dictionary(column.type):
            continue
        for chunk in column.chunks:
            lengths = pc.utf8_length(chunk.dictionary)
            longest = pc.max(lengths).as_py() or 0
            if longest > MAX_CELL:
                raise VaekitError(f"{path}: column {name[:100]!r} holds a text cell of {longest:,} characters; vaekit reads "
                                  f"numbers, booleans and labels of at most {MAX_CELL:,}")
            total += pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0
    if total > MAX_TABLE_BYTES:
        raise VaekitError(f"{path}: its text cells hold {total:,} characters, more than the {MAX_TABLE_BYTES:,} vaekit "
                          "reads from a table; split it, or keep the columns the model needs")


def _check_sizes(path: Path, meta: Any, text: set[str], data: bytes) -> None:
    """A Parquet file's decompressed size, from its footer and its pages' headers (what pyarrow allocates by), before
    a page is decoded: at most MAX_TABLE_BYTES in all, and no text column chunk larger than its rows' cells of
    MAX_CELL characters could be (4 bytes a character and 4 of length each; distinct values are all decoded at once:
    56 KB of 30 long values took 7 GB)."""
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page and chunk.dictionary_page_offset else \
                chunk.data_page_offset
            try:  # the footer's own total is the writer's word: the pages' headers are what is allocated
                size = max(chunk.total_uncompressed_size, sum(page_sizes(data, start, chunk.total_compressed_size)))
            except Malformed as e:
                raise VaekitError(f"{path}: cannot read as Parquet (column chunk {g}.{c}: {e})") from None
            total += size
            name = chunk.path_in_schema
            if name in text and size > group.num_rows * (4 * MAX_CELL + 8) + (1 << 16):
                raise VaekitError(f"{path}: column {name[:100]!r} holds {size:,} bytes of text "
                                  f"for {group.num_rows:,} rows; vaekit reads numbers, booleans and labels of at most "
                                  f"{MAX_CELL:,} characters")
    if total > MAX_TABLE_BYTES:
        raise VaekitError(f"{path}: {total:,} bytes once decompressed, more than the {MAX_TABLE_BYTES:,} vaekit reads "
                          "from a table; split it, or keep the columns the model needs")


def _check_cells(path: Path, rows: int, columns: int) -> None:
    if rows * columns > MAX_TABLE_CELLS:
        raise VaekitError(f"{path}: {rows:,} rows × {columns:,} columns is more than the {MAX_TABLE_CELLS:,} cells vaekit "
                          "reads from a table; split it, or keep the columns the model needs")


MAX_NAME = 1000  # characters of a column's name (every message and listing shows it)
HIDDEN = ("Cc", "Cf", "Zl", "Zp")  # controls; format characters (zero-width, bidi, soft hyphen, tags); line breaks
IGNORABLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10),
             *range(0xE0100, 0xE01F0)}  # the rest of Unicode's default-ignorable code points: selectors, fillers


def _check_names(path: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        if not name:
            pandas = " (pandas' index? write the table with index=False)" if i == 0 else ""
            raise VaekitError(f"{path}: column {i + 1} of the header has no name{pandas}")
        sep = next((c for c in "\t;|" if c in name), None) if len(names) == 1 else None
        if sep is not None:  # Excel writes ';' where ',' is the decimal mark
            raise VaekitError(f"{path}: the header is one column holding {'tabs' if sep == chr(9) else repr(sep)}; "
                              "vaekit reads comma-separated tables: write the file as CSV")
        if any(unicodedata.category(c) in HIDDEN or ord(c) in IGNORABLE for c in name):  # NUL, ESC, NEL, U+2028, ZWSP, U+2060, U+061C,
            raise VaekitError(f"{path}: column {i + 1} of the header, {name[:100]!r}, holds a control character; "  # …
                              "rename it")  # a right-to-left override or a zero-width space: invisible or misleading
        if len(name) > MAX_NAME:
            raise VaekitError(f"{path}: column {i + 1} of the header has a name of {len(name):,} characters "
                              f"({name[:40]!r}…); at most {MAX_NAME:,}")
    normal = [unicodedata.normalize("NFKC", n) for n in names]  # é as one code point or e + ´, ａ and a: one name
    dup = next((n for n, m in zip(names, normal, strict=True) if normal.count(m) > 1), None)
    if dup is not None:
        raise VaekitError(f"{path}: the header names column {dup!r} twice")


def load_overrides(schema_file: str | None, column_types: Sequence[str]) -> dict[str, Any]:
    """{column: kind or {"kind", "levels"}} from a `--schema FILE` (JSON) and `--column-type NAME=KIND` (these last)."""
    given: dict[str, Any] = {}
    if schema_file:
        path = Path(schema_file)
        try:
            given = json_loads(read_capped(path, MAX_SCHEMA_BYTES).decode("utf-8"))
        except OSError as e:
            raise VaekitError(f"{path}: cannot read ({e.strerror})") from None
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
    columns by name, unknown levels refused) or one inferred, with the user's `overrides` by column name.
    A table under the cell cap that still needs more memory than is left is one line naming the file (the
    command's own advice, a smaller --k or --draws, would not help)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\0" in str(path):
        raise VaekitError(f"read_table: name the CSV or Parquet file to read, got {path!r:.80}")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise VaekitError(f"read_table: overrides must be a mapping of column name → kind, got {type(overrides).__name__}")
    if schema is not None and not isinstance(schema, Schema):
        raise VaekitError(f"read_table: schema must be a run's Schema (model.columns) or None, got "
                          f"{type(schema).__name__}")
    path = Path(path)
    try:
        return _read_table(path, schema, overrides)
    except MemoryError:
        pass  # raised below, outside this block: the MemoryError's frames (the rows read so far) are freed first
    raise VaekitError(f"{path}: reading the table needs more memory than this machine has left; split it, or keep the "
                      "columns the model needs")


def _read_table(path: Path, schema: Schema | None, overrides: Mapping[str, Any] | None) -> Table:
    names, cells, lines = _read_rows(path)
    if not cells:
        raise VaekitError(f"{path}: the table has a header and no rows")
    if schema is not None:
        missing = [n for n in schema.names if n not in names]
        if missing:
            raise VaekitError(f"{path}: no column {missing[0]!r}; the run's table has {', '.join(schema.names)}")
        order = [names.index(n) for n in schema.names]
        rows = [[r[j] for j in order] for r in cells]
        return Table(encode(rows, lines, schema, str(path)), schema, np.asarray(lines), names, cells)
    overrides = dict(overrides or {})
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise VaekitError(f"{path}: the schema names column {unknown[0]!r}, which the table does not have "
                          f"(it has {', '.join(names[:12])}{', …' if len(names) > 12 else ''})")
    columns = []
    for j, name in enumerate(names):
        column = [r[j] for r in cells]
        try:
            col = infer(name, column)
            if name in overrides:
                col = override(col, overrides[name], column, "--schema/--column-type")
        except VaekitError as e:
            raise VaekitError(f"{path}: {e}") from None
        columns.append(col)
    schema = Schema(tuple(columns))
    return Table(encode(cells, lines, schema, str(path)), schema, np.asarray(lines), names, cells)


def penguins_csv() -> Path:
    """The Palmer penguins CSV that the `palmerpenguins` package ships (Horst, Hill & Gorman 2020), found
    without importing the package (it imports pandas)."""
    import importlib.util

    spec = importlib.util.find_spec("palmerpenguins")
    if spec is None or not spec.submodule_search_locations:
        raise VaekitError("dataset penguins needs the palmerpenguins package: pip install 'vaekit[tables]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "penguins.csv"
