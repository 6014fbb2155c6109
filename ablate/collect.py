"""Trial records -> two tidy parquet tables; the only module that writes parquet.

``collect_results(results/<sweep>)`` reads every ``trials/<id>/`` folder (``ablate.record``) and
writes, next to ``trials/``:

``trials.parquet``, one row per trial, columns in this order:
    id, sweep, arm, role (str)       bookkeeping from trial.json
    varied (str)                     JSON object {dotted axis: value} the sweep varied for this arm
    expected (str)                   JSON of Trial.expected (the paper's numbers/claims), or null
    record_schema (int64)            the record format version the trial was written with
    state (str), attempt (int64)     state.json ("new" when the trial has no state yet)
    error_type, error_message (str)  for failed trials
    model.*, data.*, train.*, seed   every TrialConfig field as a dotted column, typed from
                                     ablate.config (nullable int64 / float64 / bool / string)
    epochs (int64)                   epochs recorded in metrics.jsonl
    params, flops (int64)            from result.json, else provenance.json
    wall_time_s (float64)
    throughput_img_per_s (float64)   mean of train/img_per_s over the recorded epochs
    final/<metric> (float64)         result.json's last-epoch row (final/epoch is int64)
    best/<metric> (float64)          result.json's best row (best/epoch is int64)
    provenance.<key> (str)           provenance.json, e.g. provenance.git_commit; git_dirty is bool
``epochs.parquet``, one row per trial and epoch: id (str), epoch (int64), then every metric key
    (``split/name``, float64). A resumed trial that re-ran an epoch keeps its last record.

Rows are sorted by id (then epoch); metric columns are sorted by name. Both files carry
``ablate.table_schema`` (TABLE_SCHEMA) in their parquet key-value metadata; readers refuse other
versions. tests/results/golden_schema.json pins the schema.

Collecting is incremental and atomic: ``.collect-manifest.json`` keeps each trial folder's
signature (the folder's mtime, which every atomic JSON write bumps, and metrics.jsonl's mtime and
size) and its number of epoch rows; unchanged trials' rows are reused from the previous tables,
every file is written to a temporary name and renamed into place (the manifest last), and nothing
is written when nothing changed. ``collect_results(..., full=True)`` rereads everything (for
records edited in place by hand). A trial whose records are corrupt or of an unknown version is
left out with a warning naming the file. The id of a trial is the name of its folder.

The files are plain parquet (snappy) without a stored arrow schema, so every reader sees the
types listed here; pandas, pyarrow, polars and DuckDB read them alike.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from ablate import record
from ablate.config import DataConfig, ModelConfig, RecipeConfig, Trial, TrialConfig, flatten
from ablate.errors import RecordError

TABLE_SCHEMA = 1
SCHEMA_KEY = b"ablate.table_schema"
TRIALS_FILE, EPOCHS_FILE = "trials.parquet", "epochs.parquet"
MANIFEST_FILE, MANIFEST_VERSION = ".collect-manifest.json", 2
HEAD_COLUMNS = {"id": pa.string(), "sweep": pa.string(), "arm": pa.string(), "role": pa.string(),
                "varied": pa.string(), "expected": pa.string(), "record_schema": pa.int64(),
                "state": pa.string(), "attempt": pa.int64(), "error_type": pa.string(),
                "error_message": pa.string()}
RUN_COLUMNS = {"epochs": pa.int64(), "params": pa.int64(), "flops": pa.int64(),
               "wall_time_s": pa.float64(), "throughput_img_per_s": pa.float64()}
_ARROW_OF = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


@dataclass(frozen=True)
class CollectSummary:
    """What one collect did. ``written`` is False when the tables were already up to date."""

    results_dir: Path
    rows: int  # trials in trials.parquet
    epoch_rows: int
    new: int  # trials read for the first time
    updated: int  # trials re-read because their records changed
    unchanged: int  # trials whose rows were reused
    skipped: int  # trials left out because a record could not be read
    warnings: tuple[str, ...]
    written: bool


def _config_columns() -> dict[str, pa.DataType]:
    """Dotted TrialConfig columns with arrow types taken from the dataclass annotations."""
    cols: dict[str, pa.DataType] = {}
    for prefix, cls in (("model.", ModelConfig), ("data.", DataConfig), ("train.", RecipeConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]  # "int | None" -> int
            base = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
            cols[prefix + f.name] = _ARROW_OF[base[0]]
    cols["seed"] = pa.int64()
    return cols


CONFIG_COLUMNS = _config_columns()


def _column_type(name: str) -> pa.DataType:
    for fixed in (HEAD_COLUMNS, CONFIG_COLUMNS, RUN_COLUMNS):
        if name in fixed:
            return fixed[name]
    if name in ("epoch", "final/epoch", "best/epoch"):
        return pa.int64()
    if name == "provenance.git_dirty":
        return pa.bool_()
    return pa.string() if name.startswith("provenance.") else pa.float64()


def _trial_column_order(names: set[str]) -> list[str]:
    fixed = [*HEAD_COLUMNS, *CONFIG_COLUMNS, *RUN_COLUMNS]
    rest = names - set(fixed)
    groups = [sorted(n for n in rest if n.startswith(p))
              for p in ("final/", "best/", "provenance.")]
    other = sorted(rest - {n for g in groups for n in g})
    return fixed + [n for g in groups for n in g] + other


def _epoch_column_order(names: set[str]) -> list[str]:
    return ["id", *_metric_order(names - {"id"})]


def _metric_order(names: set[str]) -> list[str]:
    return ["epoch", *sorted(names - {"epoch"})]


def _trial_dirs(results_dir: Path) -> dict[str, Path]:
    """Trial id -> folder, sorted by id (folder names are the ids the writer gave them)."""
    root = record.trials_root(results_dir)
    if not root.is_dir():
        return {}
    with os.scandir(root) as it:  # d_type, not a stat per entry: 10,000 folders in ~10 ms
        names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    return {name: root / name for name in names}


def _signature(tdir: Path) -> list[int | None]:
    """What changes whenever ablate.record writes to the folder.

    JSON records are replaced by rename, which updates the folder's mtime; metrics.jsonl is
    appended to, which updates its own mtime and size. Two stats instead of six.
    """
    try:
        m = (tdir / "metrics.jsonl").stat()
        metrics = [m.st_mtime_ns, m.st_size]
    except FileNotFoundError:
        metrics = [None, None]
    return [tdir.stat().st_mtime_ns, *metrics]


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    return json.dumps(v, sort_keys=True)


def _config_row(config: TrialConfig) -> dict[str, Any]:
    """flatten(config.to_dict()) without asdict's deep copies (a third of a collect's time)."""
    row = {f"{part}.{k}": v for part in ("model", "data", "train")
           for k, v in vars(getattr(config, part)).items()}
    row["seed"] = config.seed
    return row


def _read_trial_row(tdir: Path) -> dict[str, Any]:
    """One trial folder's row, without the columns derived from its epochs. RecordError if bad."""
    trial: Trial = record.read_trial(tdir)
    # The folder name is the id the writer gave the trial; rehashing the config would cost a
    # third of a collect and would disown old trials whenever a config field is added.
    tid = tdir.name
    state = record.read_json(tdir / "state.json") or {}
    result = record.read_result(tdir) or {}
    prov = record.read_provenance(tdir) or {}
    error = state.get("error") or {}
    row: dict[str, Any] = {
        "id": tid, "sweep": trial.sweep, "arm": trial.arm, "role": trial.role,
        "varied": json.dumps(trial.varied, sort_keys=True, default=str),
        "expected": None if trial.expected is None else json.dumps(trial.expected, sort_keys=True),
        "record_schema": record.RECORD_SCHEMA,
        "state": state.get("state", record.NEW), "attempt": state.get("attempt"),
        "error_type": error.get("type"), "error_message": error.get("message"),
        **_config_row(trial.config),
        "params": result.get("params", prov.get("params")),
        "flops": result.get("flops", prov.get("flops")),
        "wall_time_s": result.get("wall_time_s", prov.get("wall_time_s")),
    }
    for part in ("final", "best"):
        row.update({f"{part}/{k}": v for k, v in (result.get(part) or {}).items()})
    skip = {"schema", "seed", "params", "flops", "wall_time_s"}  # columns of their own
    row.update({f"provenance.{k}": _scalar(v) for k, v in flatten(prov).items() if k not in skip})
    return row


def _read_epochs(dirs: dict[str, Path]) -> tuple[pa.Table, list[tuple[str, int]]]:
    """Epoch rows of the given trials, without the id column, and (id, rows) blocks in order.

    Clean files (epochs 1, 2, ... once each, whole lines) are parsed by pyarrow, 256 files at a
    time, which is ~5x faster than line-by-line JSON; any other file (a truncated line, an epoch
    re-run after a resume, NaN) goes through record.read_metrics, which owns the rules.
    """
    tables, blocks, chunk, slow = [], [], [], []

    def flush():
        table, counts = _parse_clean(chunk)
        if table is None:
            slow.extend(tid for tid, _ in chunk)
        else:
            tables.append(table)
            blocks.extend((tid, n) for (tid, _), n in zip(chunk, counts) if n)
            slow.extend(tid for (tid, _), n in zip(chunk, counts) if n is None)
        chunk.clear()

    for tid, tdir in dirs.items():
        try:
            blob = (tdir / "metrics.jsonl").read_bytes()
        except FileNotFoundError:
            continue
        if blob.endswith(b"\n") and b"\n\n" not in blob:
            chunk.append((tid, blob))
        elif blob:
            slow.append(tid)
        if len(chunk) == 256:
            flush()
    if chunk:
        flush()
    rows = []
    for tid in slow:
        mine = record.read_metrics(dirs[tid])
        rows += mine
        blocks += [(tid, len(mine))] if mine else []
    tables.append(_to_table(rows, _metric_order))
    return pa.concat_tables(tables, promote_options="permissive"), blocks


def _parse_clean(chunk: list[tuple[str, bytes]]) -> tuple[pa.Table | None, list[int | None]]:
    """Parse metrics.jsonl files together: (rows of the clean ones, rows per file or None).

    None for a file whose epochs are not 1, 2, ..., n (it needs record.read_metrics); a table of
    None when the chunk does not parse at all.
    """
    counts = np.array([blob.count(b"\n") for _, blob in chunk])
    try:
        table = pj.read_json(io.BytesIO(b"".join(blob for _, blob in chunk)))
        if table.num_rows != counts.sum() or "epoch" not in table.column_names:
            return None, []
        table = pa.table({n: table[n].cast(_column_type(n)) for n in table.column_names})
    except (pa.ArrowException, ValueError):
        return None, []  # one bad file spoils the chunk: read each of them the careful way
    owner = np.repeat(np.arange(len(chunk)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    epoch = table["epoch"].to_numpy(zero_copy_only=False)
    wrong = np.unique(owner[epoch != np.arange(len(owner)) - starts + 1])
    table = table.filter(pa.array(~np.isin(owner, wrong)))
    bad = set(wrong.tolist())
    return table, [None if i in bad else int(n) for i, n in enumerate(counts)]


def _add_epoch_columns(rows: list[dict[str, Any]], body: pa.Table, blocks) -> None:
    """Fill each row's ``epochs`` and ``throughput_img_per_s`` from its epoch records."""
    counts = np.array([n for _, n in blocks], dtype=np.int64)
    starts = np.cumsum(counts) - counts
    speed = body.column("train/img_per_s").to_numpy(zero_copy_only=False).astype(float) \
        if "train/img_per_s" in body.column_names else np.full(body.num_rows, np.nan)
    known = ~np.isnan(speed)
    sums = np.add.reduceat(np.where(known, speed, 0.0), starts) if len(blocks) else []
    seen = np.add.reduceat(known.astype(np.int64), starts) if len(blocks) else []
    stats = {tid: (n, s / k if k else None)
             for (tid, n), s, k in zip(blocks, sums, seen)}
    for row in rows:
        row["epochs"], row["throughput_img_per_s"] = stats.get(row["id"], (0, None))


def _to_table(rows: list[dict[str, Any]], order) -> pa.Table:
    names: set[str] = set()
    for r in rows:
        names.update(r)
    cols = order(names) if rows else order(set())
    arrays = []
    for name in cols:
        values = [r.get(name) for r in rows]
        typ = _column_type(name)
        try:
            arrays.append(pa.array(values, type=typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays.append(pa.array([_coerce(v, typ) for v in values], type=typ))
    return pa.Table.from_arrays(arrays, names=cols)


def _coerce(v: Any, typ: pa.DataType) -> Any:
    """A value of the wrong type in a record becomes null (numbers) or its JSON text (strings)."""
    if pa.types.is_string(typ):
        return v if v is None or isinstance(v, str) else json.dumps(v, default=str)
    want = {pa.int64(): int, pa.float64(): float, pa.bool_(): bool}[typ]
    try:
        return want(v) if isinstance(v, (int, float, bool)) else None
    except (OverflowError, ValueError):
        return None


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


def _merge_trials(results_dir: Path, keep: set[str], rows: list[dict]) -> pa.Table:
    """Kept rows of the previous trials.parquet plus the new rows, sorted by id."""
    new = _to_table(rows, _trial_column_order)
    if keep:
        old = pq.read_table(results_dir / TRIALS_FILE)
        old = old.filter(pc.is_in(old["id"], value_set=pa.array(sorted(keep), pa.string())))
        new = pa.concat_tables([old.replace_schema_metadata(None), new],
                               promote_options="permissive")
    return new.select(_trial_column_order(set(new.column_names))).sort_by("id")


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
    table = pa.concat_tables(parts, promote_options="permissive").combine_chunks()
    counts = [where[tid][2] for tid in order]
    ids = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(order), dtype=np.int32), counts)),
        pa.array(order, pa.string()))
    table = table.append_column("id", ids)
    return table.select(_epoch_column_order(set(table.column_names))), dict(zip(order, counts))


def _temp_beside(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def _write_parquet(table: pa.Table, where: str) -> None:
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
    temps: dict[str, str] = {}
    try:
        for name, table in tables.items():
            temps[name] = _temp_beside(results_dir / name)
            _write_parquet(table, temps[name])
        for name, tmp in temps.items():
            os.replace(tmp, results_dir / name)
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
    return {name: [(st := (results_dir / name).stat()).st_mtime_ns, st.st_size]
            for name in tables}


def _write_manifest(results_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = _temp_beside(results_dir / MANIFEST_FILE)
    try:
        Path(tmp).write_text(json.dumps(manifest, sort_keys=True))
        os.replace(tmp, results_dir / MANIFEST_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)


def collect_results(results_dir: str | Path, *, full: bool = False) -> CollectSummary:
    """Bring ``trials.parquet``/``epochs.parquet`` in ``results_dir`` up to date with its records.

    Only trials whose folders changed since the last collect are read again (``full=True``
    reads all: after editing records by hand rather than through ablate.record). Raises
    RecordError when ``results_dir`` holds no trial folders. Unreadable trials never raise:
    they are left out and named in ``warnings``; the caller decides how to show them.
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
    rows, warnings, read = [], [], {}
    for tid, d in dirs.items():
        if tid not in keep:
            try:
                rows.append(_read_trial_row(d))
                read[tid] = d
            except RecordError as err:
                warnings.append(f"skipped trial {tid}: {err}")
    new = sum(1 for tid in read if tid not in old)
    summary = dict(results_dir=results_dir, new=new, updated=len(read) - new,
                   unchanged=len(keep), skipped=len(dirs) - len(keep) - len(read),
                   warnings=tuple(warnings))
    if manifest and not read and set(old) == keep:  # nothing to do: write nothing
        return CollectSummary(rows=len(keep), epoch_rows=sum(old[t]["rows"] for t in keep),
                              written=False, **summary)
    body, blocks = _read_epochs(read)
    _add_epoch_columns(rows, body, blocks)
    trials = _merge_trials(results_dir, keep, rows)
    epochs, counts = _merge_epochs(results_dir, {t: e["rows"] for t, e in old.items()}, keep,
                                   body, blocks)
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
