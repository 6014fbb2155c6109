"""Trial folders -> table rows: a dict per trial, an arrow table of epoch rows (ablate.columns).

Reads through ablate.record, which owns the record formats; a trial whose records are corrupt or
of an unknown version raises RecordError, and one whose metrics.jsonl lost an epoch to an
unreadable line is returned apart as damaged. ablate.collect decides which folders to read and
writes the tables.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from ablate import record
from ablate.columns import column_type, metric_order, to_table
from ablate.config import Trial, TrialConfig, flatten
from ablate.errors import RecordError


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


def read_trial_row(tdir: Path) -> dict[str, Any]:
    """One trial folder's row, without the columns derived from its epochs. RecordError if bad.

    Its ``epochs`` is what result.json counts, until add_epoch_columns puts the recorded ones.
    """
    trial: Trial = record.read_trial(tdir)
    # The folder name is the id the writer gave the trial; rehashing the config would cost a
    # third of a collect and would disown old trials whenever a config field is added.
    tid = tdir.name
    state = record.read_state_checked(tdir) or {}
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
        "resources.workers": trial.resources.workers, "epochs": result.get("epochs"),
        "params": result.get("params", prov.get("params")),
        "flops": result.get("flops", prov.get("flops")),
        "wall_time_s": result.get("wall_time_s", prov.get("wall_time_s")),
    }
    for part in ("final", "best"):
        row.update({f"{part}/{k}": v for k, v in (result.get(part) or {}).items()})
    skip = {"schema", "seed", "params", "flops", "wall_time_s"}  # columns of their own
    row.update({f"provenance.{k}": _scalar(v) for k, v in flatten(prov).items() if k not in skip})
    return row


def read_epochs(dirs: dict[str, Path], counted: dict[str, Any] | None = None
                ) -> tuple[pa.Table, list[tuple[str, int]], dict[str, RecordError]]:
    """Epoch rows of the given trials, without the id column, (id, rows) blocks in order, and
    the damaged trials (id -> the error naming the unreadable line, or saying that fewer epochs
    are recorded than ``counted`` gives: finished trials' result.json counts), which have no
    rows.

    Clean files (epochs 1, 2, ... once each, whole lines) are parsed by pyarrow, 256 files at a
    time, which is ~5x faster than line-by-line JSON; any other file (a truncated line, an epoch
    re-run after a resume, NaN, an unreadable line) goes through record.scan_metrics, which owns
    the rules.
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
        except OSError:  # a folder named metrics.jsonl: record.scan_metrics names it
            slow.append(tid)
            continue
        if blob.endswith(b"\n") and b"\n\n" not in blob:
            chunk.append((tid, blob))
        elif blob:
            slow.append(tid)
        if len(chunk) == 256:
            flush()
    if chunk:
        flush()
    rows, damaged = [], {}
    for tid in slow:
        metrics = record.scan_metrics(dirs[tid])
        if metrics.damage is not None:
            damaged[tid] = metrics.damage
            continue
        rows += metrics.rows
        blocks += [(tid, len(metrics.rows))] if metrics.rows else []
    tables.append(to_table(rows, metric_order))
    body = pa.concat_tables(tables, promote_options="permissive")
    recorded = dict(blocks)
    for tid, epochs in (counted or {}).items():
        if tid not in damaged and (lost := record.lost_epochs(dirs[tid], recorded.get(tid, 0),
                                                              epochs)) is not None:
            damaged[tid] = lost
    if any(tid in damaged for tid, _ in blocks):
        keep = np.repeat([tid not in damaged for tid, _ in blocks], [n for _, n in blocks])
        body = body.filter(pa.array(keep, pa.bool_()))
        blocks = [(tid, n) for tid, n in blocks if tid not in damaged]
    return body, blocks, damaged


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
        table = pa.table({n: table[n].cast(column_type(n)) for n in table.column_names})
    except (pa.ArrowException, ValueError):
        return None, []  # one bad file spoils the chunk: read each of them the careful way
    owner = np.repeat(np.arange(len(chunk)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    epoch = table["epoch"].to_numpy(zero_copy_only=False)
    wrong = np.unique(owner[epoch != np.arange(len(owner)) - starts + 1])
    table = table.filter(pa.array(~np.isin(owner, wrong)))
    bad = set(wrong.tolist())
    return table, [None if i in bad else int(n) for i, n in enumerate(counts)]


def add_epoch_columns(rows: list[dict[str, Any]], body: pa.Table, blocks) -> None:
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
