"""Trial records -> two tidy parquet tables; the only module that writes parquet.

``collect_results(results/<sweep>)`` reads every ``trials/<id>/`` folder (``ablate.rows``, through
``ablate.record``) and writes, next to ``trials/``, ``trials.parquet`` (one row per trial) and
``epochs.parquet`` (one row per trial and epoch), with the columns ``ablate.columns`` lists. Both
files carry ``ablate.table_schema`` (TABLE_SCHEMA) in their parquet key-value metadata;
``load_tables`` refuses other versions.

Collecting is incremental and atomic: ``.collect-manifest.json`` keeps each trial folder's
signature (name, size and modification time of each of its files, so an edit in place is seen
even when the folder's own time stays) and its number of epoch rows; unchanged trials' rows are
reused from the previous tables (less the columns that only rows now gone filled), every file
is written through ``ablate.files.atomic_files`` (temporary names, renamed into place, the
manifest last), and nothing is written when nothing changed. ``collect_results(...,
full=True)`` rereads everything, as a collect does when the previous tables cannot be read. A
trial whose records are corrupt or of an unknown version, or whose metrics.jsonl lost an epoch
to an unreadable line or holds fewer epochs than a finished trial's result.json counts (state
"damaged" in ``ablate status``), is left out with a warning naming the file (and line), on
every collect until it is repaired. The id of a trial is the name of its folder.

The files are plain parquet (snappy) without a stored arrow schema, so every reader sees the
types ablate.columns lists; pandas, pyarrow, polars and DuckDB read them alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ablate import files, record

from ablate.columns import TABLE_SCHEMA, epoch_column_order, to_table, trial_column_order
from ablate.errors import RecordError
from ablate.rows import add_epoch_columns, read_epochs, read_trial_row

SCHEMA_KEY = b"ablate.table_schema"
TRIALS_FILE, EPOCHS_FILE = "trials.parquet", "epochs.parquet"
MANIFEST_FILE, MANIFEST_VERSION = ".collect-manifest.json", 3


@dataclass(frozen=True)
class CollectSummary:
    """What one collect did. ``written`` is False when the tables were already up to date."""

    results_dir: Path
    rows: int  # trials in trials.parquet
    epoch_rows: int
    new: int  # trials read for the first time
    updated: int  # trials re-read because their records changed
    unchanged: int  # trials whose rows were reused
    skipped: int  # trials left out because a record could not be read, or lost an epoch
    warnings: tuple[str, ...]
    written: bool


def _trial_dirs(results_dir: Path) -> dict[str, Path]:
    """Trial id -> folder, sorted by id (folder names are the ids the writer gave them)."""
    root = record.trials_root(results_dir)
    record.check_trials_root(results_dir)
    if not root.is_dir():
        return {}
    with os.scandir(root) as it:  # d_type, not a stat per entry: 10,000 folders in ~10 ms
        names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    return {name: root / name for name in names}


def _strays(results_dir: Path) -> list[str]:
    """Warnings for the files in trials/ where only trial folders belong (one that replaced a
    trial's folder, say): they are no trial's record."""
    root = record.trials_root(results_dir)
    if not root.is_dir():
        return []
    with os.scandir(root) as it:
        names = sorted(e.name for e in it if not e.is_dir() and not e.name.startswith("."))
    return [f"skipped {record.folder_problem(root / name)}" for name in names]


def _signature(tdir: Path) -> list[list[Any]]:
    """[name, size, mtime_ns] of each file of the folder, by name: any write to a record changes
    it, be it a rename (a new inode, a new time), an append or an edit in place."""
    with os.scandir(tdir) as it:
        files = sorted((e.name, e.stat()) for e in it
                       if e.is_file(follow_symlinks=False) and not e.name.startswith("."))
    return [[name, st.st_size, st.st_mtime_ns] for name, st in files]


def _load_manifest(results_dir: Path) -> dict[str, Any] | None:
    """The last collect's manifest, if its tables are the ones it wrote."""
    try:
        manifest = json.loads((results_dir / MANIFEST_FILE).read_text())
        if (manifest.get("table_schema"), manifest.get("manifest")) != (TABLE_SCHEMA,
                                                                         MANIFEST_VERSION):
            return None
        if not all(isinstance(e, dict) and isinstance(e.get("sig"), list)
                   and isinstance(e.get("rows"), int) for e in manifest["trials"].values()):
            return None
        for name in (TRIALS_FILE, EPOCHS_FILE):
            st = (results_dir / name).stat()
            if manifest["tables"][name] != [st.st_mtime_ns, st.st_size]:
                return None  # replaced by hand, or a collect died between the two renames
        return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no usable manifest: collect everything again


def _stale(table: pa.Table, kept: list[pa.Table], new: pa.Table) -> list[str]:
    """The columns of a previous ``table`` that only rows not ``kept`` filled: the new rows
    lack them, so a collect from scratch would not have them."""
    rows = sum(t.num_rows for t in kept)
    return [n for n in table.column_names if n not in new.column_names
            and table[n].null_count < table.num_rows
            and sum(t[n].null_count for t in kept) == rows]


def _merge_trials(results_dir: Path, keep: set[str], rows: list[dict]) -> pa.Table:
    """Kept rows of the previous trials.parquet plus the new rows, sorted by id."""
    new = to_table(rows, trial_column_order)
    if keep:
        table = pq.read_table(results_dir / TRIALS_FILE)
        old = table.filter(pc.is_in(table["id"], value_set=pa.array(sorted(keep), pa.string())))
        old = old.drop_columns(_stale(table, [old], new))
        new = pa.concat_tables([old.replace_schema_metadata(None), new],
                               promote_options="permissive")
    return new.select(trial_column_order(set(new.column_names))).sort_by("id")


def _merge_epochs(results_dir: Path, old_rows: dict[str, int], keep: set[str], body: pa.Table,
                  blocks: list[tuple[str, int]]) -> tuple[pa.Table, dict[str, int]]:
    """Splice kept trials' rows of the previous epochs.parquet with the new rows, by id.

    Both are runs of rows per trial; the result is cut and pasted from slices of the two in id
    order, so nothing is sorted and the previous ids are never read (a million strings).
    Returns the table and its rows per trial.
    """
    old = None
    if any(old_rows.get(tid) for tid in keep):
        names = [n for n in pq.read_schema(results_dir / EPOCHS_FILE).names if n != "id"]
        old = pq.read_table(results_dir / EPOCHS_FILE, columns=names)
    where = {}  # id -> (source, start, rows)
    start = 0
    for tid, n in sorted(old_rows.items()):
        if tid in keep and n:
            where[tid] = (old, start, n)
        start += n
    start = 0
    for tid, n in blocks:
        where[tid] = (body, start, n)
        start += n
    pieces, order = [], sorted(where)
    for tid in order:
        src, first, n = where[tid]
        last = pieces[-1] if pieces else None
        if last and last[0] is src and last[1] + last[2] == first:
            pieces[-1] = (src, last[1], last[2] + n)  # contiguous: one slice
        else:
            pieces.append((src, first, n))
    parts = [src.slice(first, n) for src, first, n in pieces] or [body.slice(0, 0)]
    if old is not None:
        stale = _stale(old, [p for p, (src, _, _) in zip(parts, pieces) if src is old], body)
        parts = [p.drop_columns([n for n in stale if n in p.column_names]) for p in parts]
    table = pa.concat_tables(parts, promote_options="permissive").combine_chunks()
    counts = [where[tid][2] for tid in order]
    ids = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(order), dtype=np.int32), counts)),
        pa.array(order, pa.string()))
    table = table.append_column("id", ids)
    return table.select(epoch_column_order(set(table.column_names))), dict(zip(order, counts))


def _write_parquet(table: pa.Table, where: Any) -> None:
    """Plain parquet: no arrow schema stored, so epochs' dictionary ids read back as strings."""
    with pq.ParquetWriter(where, table.schema.remove_metadata(), compression="snappy",
                          store_schema=False) as writer:
        writer.write_table(table.replace_schema_metadata(None))
        writer.add_key_value_metadata({SCHEMA_KEY.decode(): str(TABLE_SCHEMA)})


def _write_tables(results_dir: Path, tables: dict[str, pa.Table]) -> dict[str, list[int]]:
    """Write every table to a temporary file, then rename them all into place.

    A failure while writing leaves every previous table untouched; the renames follow each
    other, and a crash between them is caught by the manifest check on the next collect.
    """
    with files.atomic_files([results_dir / name for name in tables], "wb") as outs:
        for table, f in zip(tables.values(), outs):
            _write_parquet(table, f)
    return {name: [(st := (results_dir / name).stat()).st_mtime_ns, st.st_size]
            for name in tables}


def _write_manifest(results_dir: Path, manifest: dict[str, Any]) -> None:
    with files.atomic_file(results_dir / MANIFEST_FILE) as f:
        f.write(json.dumps(manifest, sort_keys=True))


def collect_results(results_dir: str | Path, *, full: bool = False) -> CollectSummary:
    """Bring ``trials.parquet``/``epochs.parquet`` in ``results_dir`` up to date with its records.

    Only trials with a file changed since the last collect are read again (``full=True``
    reads all). Raises RecordError when ``results_dir`` holds no trial folders. Unreadable or
    damaged trials never raise: they are left out and named in ``warnings`` (every time); the
    caller decides how to show them.
    """
    results_dir = Path(results_dir)
    dirs = _trial_dirs(results_dir)
    if not dirs:
        raise RecordError("no trial folders under trials/", file=results_dir,
                          hint="pass a results folder written by 'ablate run' (results/<sweep>)")
    manifest = None if full else _load_manifest(results_dir)
    old = manifest["trials"] if manifest else {}
    sigs = {tid: _signature(d) for tid, d in dirs.items()}
    keep = {tid for tid, sig in sigs.items() if tid in old and old[tid]["sig"] == sig}
    rows, warnings, read = [], _strays(results_dir), {}
    for tid, d in dirs.items():
        if tid not in keep:
            try:
                rows.append(read_trial_row(d))
                read[tid] = d
            except RecordError as err:
                warnings.append(f"skipped trial {tid}: {err}")
    counted = {r["id"]: r["epochs"] for r in rows if r["state"] in record.FINISHED}
    body, blocks, damaged = read_epochs(read, counted)
    for tid, err in damaged.items():
        warnings.append(f"skipped trial {tid} (damaged): {err}")
        del read[tid]
    rows = [r for r in rows if r["id"] in read]
    new = sum(1 for tid in read if tid not in old)
    summary = dict(results_dir=results_dir, new=new, updated=len(read) - new,
                   unchanged=len(keep), skipped=len(dirs) - len(keep) - len(read),
                   warnings=tuple(warnings))
    if manifest and not read and set(old) == keep:  # nothing to do: write nothing
        return CollectSummary(rows=len(keep), epoch_rows=sum(old[t]["rows"] for t in keep),
                              written=False, **summary)
    add_epoch_columns(rows, body, blocks)
    try:
        trials = _merge_trials(results_dir, keep, rows)
        epochs, counts = _merge_epochs(results_dir, {t: e["rows"] for t, e in old.items()},
                                       keep, body, blocks)
    except (OSError, pa.ArrowException):
        if not keep:
            raise
        return collect_results(results_dir, full=True)  # the previous tables are unreadable
    written = _write_tables(results_dir, {TRIALS_FILE: trials, EPOCHS_FILE: epochs})
    entries = {tid: {"sig": sigs[tid], "rows": counts.get(tid, 0)}
               for tid in sorted(keep | set(read))}
    _write_manifest(results_dir, {"table_schema": TABLE_SCHEMA, "manifest": MANIFEST_VERSION,
                                  "tables": written, "trials": entries})
    return CollectSummary(rows=trials.num_rows, epoch_rows=epochs.num_rows, written=True,
                          **summary)


def _read_checked(path: Path):
    if not path.exists():
        raise RecordError(f"no {path.name}", file=path, hint="run 'ablate collect' on the folder")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise RecordError(f"unreadable parquet ({err})", file=path,
                          hint="run 'ablate collect' again to rewrite it") from None
    version = (table.schema.metadata or {}).get(SCHEMA_KEY, b"?").decode()
    if version != str(TABLE_SCHEMA):
        raise RecordError(f"table schema {version} (this ablate reads {TABLE_SCHEMA})", file=path,
                          hint="run 'ablate collect' again to rewrite it")
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(),
                                         pa.bool_(): pd.BooleanDtype()}.get)


def load_tables(results_dir: str | Path):
    """(trials, epochs) DataFrames of a collected results folder; ints and bools nullable.

    Raises RecordError when the tables are missing, unreadable or of another schema version.
    """
    results_dir = Path(results_dir)
    return _read_checked(results_dir / TRIALS_FILE), _read_checked(results_dir / EPOCHS_FILE)
