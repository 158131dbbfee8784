"""Imputation output files: tables streamed to parquet, one row group per sampled chunk, and the
part files of several processes merged in order.

With one process :func:`write_parts` writes ``<name>.parquet`` directly (through a temporary name,
renamed when complete, so a killed run never leaves a truncated table under the final name). With
``count`` processes (:func:`cgjax.distributed.process_range` gives each its contiguous block of the
replicate-major rows) process ``index`` writes ``<name>.part-<index>-of-<count>.parquet``
(:func:`part_path`) and process 0, after a barrier, concatenates them in process order
(:func:`merge_parts`); host memory stays one chunk (one row group) throughout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cgjax._atomic import atomic_file

__all__ = ["merge_parts", "part_path", "write_parts"]


def part_path(out_dir, name: str, index: int, count: int) -> Path:
    """Where process ``index`` of ``count`` writes its rows of ``<name>.parquet``."""
    return Path(out_dir) / f"{name}.part-{index:05d}-of-{count:05d}.parquet"


def merge_parts(out_dir, name: str, count: int, *, remove: bool = True) -> Path:
    """Concatenate the ``count`` part files of ``name`` in process order into ``<name>.parquet``, one
    row group at a time (host memory: one row group), atomically (a temporary file renamed); missing
    parts are an error. Parts without rows are allowed."""
    out_dir = Path(out_dir)
    parts = [part_path(out_dir, name, i, count) for i in range(count)]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise FileNotFoundError(f"missing part files: {missing}")
    dest = out_dir / f"{name}.parquet"
    tmp = out_dir / f".{name}.parquet.merging"
    files = [pq.ParquetFile(p) for p in parts]
    # the schema of the first part with rows (an empty part may hold untyped, null columns)
    schema = next((f.schema_arrow for f in files if f.metadata.num_rows > 0), files[0].schema_arrow)
    writer = None
    try:
        writer = pq.ParquetWriter(tmp, schema)
        for f in files:
            for g in range(f.num_row_groups):
                table = f.read_row_group(g)
                if table.num_rows:
                    writer.write_table(table if table.schema.equals(schema) else table.cast(schema))
        writer.close()
        os.replace(tmp, dest)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if remove:
        for p in parts:
            p.unlink()
    return dest


def write_parts(out_dir, name: str, frames, index: int, count: int, empty: pd.DataFrame, merge: bool) -> Path:
    """Write the DataFrames ``frames`` one row group each to this process's part file (the final file
    directly, through a temporary name, with one process). Returns the path written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{name}.parquet" if count == 1 and merge else part_path(out_dir, name, index, count)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:  # a process with no rows still writes its (empty) part
        first = empty
    schema = pa.Schema.from_pandas(first, preserve_index=False)
    schema = schema.set(schema.get_field_index("sample_id"), pa.field("sample_id", pa.string()))
    with atomic_file(dest) as tmp, pq.ParquetWriter(tmp, schema) as writer:  # a kill leaves no partial file
        writer.write_table(pa.Table.from_pandas(first, schema=schema, preserve_index=False))
        for df in frames:
            writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
    return dest
