"""The export's writers: CSV, JSON and Parquet, each streaming the rows of analysis/exports.py
in batches (Parquet writes one row group per batch), so an export of any size runs in flat
memory."""

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.exports import ARROW_TYPES, FORMATS, Column, columns, export_rows
from analysis.selectors import ExportFilter
from core.errors import DomainError

BATCH_ROWS = 5000  # rows per written batch (a Parquet row group)


def _text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "timestamp":
        return value.isoformat()
    if kind in ("json", "floats"):
        return json.dumps(value, sort_keys=True)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return repr(float(value))  # shortest text that reads back to the same float
    return str(value)


# A spreadsheet reads a cell that begins with one of these as a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any, kind: str) -> str:
    """A CSV cell. String cells (names, keys, reasons: text people typed) that a spreadsheet
    would run as a formula get a leading single quote, OWASP's rule; numbers, booleans,
    timestamps and JSON cells are left as they are, so a negative lift stays a number."""
    text = _text(value, kind)
    if kind == "string" and text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _batches(
    groups: Iterable[list[dict[str, Any]]], on_rows: Callable[[int], None] | None
) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for rows in groups:
        batch.extend(rows)
        if on_rows:
            on_rows(len(rows))
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_csv(
    groups: Iterable[list[dict[str, Any]]],
    on_rows: Callable[[int], None] | None = None,
    cols: tuple[Column, ...] | None = None,
) -> Iterator[bytes]:
    """CSV of the rows in ``groups``, in the columns ``cols`` (default: the result export's)."""
    cols = cols or columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in cols])
    for batch in _batches(groups, on_rows):
        writer.writerows([_cell(row[c.name], c.type) for c in cols] for row in batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def stream_json(
    groups: Iterable[list[dict[str, Any]]],
    on_rows: Callable[[int], None] | None = None,
    cols: tuple[Column, ...] | None = None,
) -> Iterator[bytes]:
    """``{"rows": [...]}``: each row as it is (its keys are the columns, in their order)."""
    yield b'{"rows": ['
    first = True
    for batch in _batches(groups, on_rows):
        parts = []
        for row in batch:
            text = json.dumps({k: _jsonable(v) for k, v in row.items()}, allow_nan=False)
            parts.append(("\n" if first else ",\n") + text)
            first = False
        yield "".join(parts).encode()
    yield b"\n]}\n"


class _Sink(io.RawIOBase):
    """A write-only file that hands its bytes over as they come (Parquet never seeks back)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


def arrow_schema(cols: tuple[Column, ...] | None = None) -> pa.Schema:
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in cols or columns()])


def stream_parquet(
    groups: Iterable[list[dict[str, Any]]],
    on_rows: Callable[[int], None] | None = None,
    cols: tuple[Column, ...] | None = None,
) -> Iterator[bytes]:
    """Parquet of the rows, typed by ``cols`` (default: the result export's columns)."""
    cols = cols or columns()
    schema = arrow_schema(cols)
    json_cols = [c.name for c in cols if c.type == "json"]
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        for batch in _batches(groups, on_rows):
            for row in batch:
                for name in json_cols:
                    if row[name] is not None:
                        row[name] = json.dumps(row[name], sort_keys=True)
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


WRITERS = {"csv": stream_csv, "json": stream_json, "parquet": stream_parquet}


def export_stream(
    flt: ExportFilter, fmt: str, on_rows: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The export as a stream of bytes in ``fmt`` (csv | json | parquet)."""
    if fmt not in WRITERS:
        raise DomainError(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.", "format")
    return WRITERS[fmt](export_rows(flt), on_rows)
