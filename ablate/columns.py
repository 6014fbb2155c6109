"""The columns of the results tables: names, arrow types and order; row dicts -> arrow tables.

``trials.parquet``, one row per trial, columns in this order:
    id, sweep, arm, role (str)       bookkeeping from trial.json
    varied (str)                     JSON object {dotted axis: value} the sweep varied for this arm
    expected (str)                   JSON of Trial.expected (the paper's numbers/claims), or null
    record_schema (int64)            the record format version the trial was written with
    state (str), attempt (int64)     state.json ("new" when the trial has no state yet)
    error_type, error_message (str)  for failed trials
    model.*, data.*, train.*, seed   every TrialConfig field as a dotted column, typed from
                                     ablate.config (nullable int64 / float64 / bool / string)
    resources.workers (int64)        the trial's data-parallel workers (1: one process)
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
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pyarrow as pa

from ablate.config import DataConfig, ModelConfig, RecipeConfig

TABLE_SCHEMA = 4  # 2: model.mixer and model.block columns; 3: train.accum_steps;
#                  4: resources.workers
HEAD_COLUMNS = {"id": pa.string(), "sweep": pa.string(), "arm": pa.string(), "role": pa.string(),
                "varied": pa.string(), "expected": pa.string(), "record_schema": pa.int64(),
                "state": pa.string(), "attempt": pa.int64(), "error_type": pa.string(),
                "error_message": pa.string()}
RUN_COLUMNS = {"resources.workers": pa.int64(), "epochs": pa.int64(), "params": pa.int64(), "flops": pa.int64(),
               "wall_time_s": pa.float64(), "throughput_img_per_s": pa.float64()}
_ARROW_OF = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


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


def column_type(name: str) -> pa.DataType:
    """The arrow type of a column of either table."""
    for fixed in (HEAD_COLUMNS, CONFIG_COLUMNS, RUN_COLUMNS):
        if name in fixed:
            return fixed[name]
    if name in ("epoch", "final/epoch", "best/epoch"):
        return pa.int64()
    if name == "provenance.git_dirty":
        return pa.bool_()
    return pa.string() if name.startswith("provenance.") else pa.float64()


def trial_column_order(names: set[str]) -> list[str]:
    """trials.parquet's columns in order: the fixed ones, then final/, best/, provenance."""
    fixed = [*HEAD_COLUMNS, *CONFIG_COLUMNS, *RUN_COLUMNS]
    rest = names - set(fixed)
    groups = [sorted(n for n in rest if n.startswith(p))
              for p in ("final/", "best/", "provenance.")]
    other = sorted(rest - {n for g in groups for n in g})
    return fixed + [n for g in groups for n in g] + other


def epoch_column_order(names: set[str]) -> list[str]:
    """epochs.parquet's columns in order: id, epoch, then the metrics by name."""
    return ["id", *metric_order(names - {"id"})]


def metric_order(names: set[str]) -> list[str]:
    """Epoch-row columns without the id, in order: epoch, then the metrics by name."""
    return ["epoch", *sorted(names - {"epoch"})]


def to_table(rows: list[dict[str, Any]], order) -> pa.Table:
    """Row dicts as a table typed by column_type, columns as ``order(names)`` lists them."""
    names: set[str] = set()
    for r in rows:
        names.update(r)
    cols = order(names) if rows else order(set())
    arrays = []
    for name in cols:
        values = [r.get(name) for r in rows]
        typ = column_type(name)
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
