"""``ablate plan``: show what a sweep would run, before anything runs.

Prints every trial (id, label, the varied axes, seed), the totals, each distinct model's
parameters and FLOPs, and, when the results folder has records, each trial's state and what
``ablate run`` would do with it, and the sweep's claims as the finished trials decide them
(with the seeds per arm an undecided claim needs: add them to ``seeds:`` and run again).
``--estimate`` adds each trial's and the sweep's estimated wall time and device-hours, from
steps timed on this machine (``ablate.estimate``). ``--json`` prints the same as one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from ablate.cli import add_override_options, add_plugin_option, override_flags, plan_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="validate a sweep file and show its trials",
        description="Validate a sweep file and show every trial it would run, the models' "
                    "sizes, and (with existing results) each trial's state and what a run "
                    "would do. Nothing is started.")
    p.add_argument("sweep", help="sweep file, e.g. sweeps/quickstart.yaml")
    p.add_argument("--results", metavar="DIR", help="results folder (default: results/NAME)")
    p.add_argument("--json", action="store_true", help="print one JSON object for programs")
    p.add_argument("--yes", action="store_true", help="confirm a plan larger than max_trials")
    p.add_argument("--no-data-check", action="store_true",
                   help="do not require data folders to exist (plan a paper-scale sweep "
                        "on a machine without the data)")
    p.add_argument("--no-stats", action="store_true",
                   help="skip counting the models' parameters and FLOPs")
    p.add_argument("--estimate", action="store_true",
                   help="time a few training and evaluation steps of each distinct model on "
                        "this machine and estimate each trial's and the sweep's wall time and "
                        "device-hours")
    p.add_argument("--device", metavar="DEV",
                   help="with --estimate: time every trial on DEV (cpu, cuda, cuda:N); "
                        "default: what a run gives it (CUDA when it asks for a GPU)")
    p.add_argument("--estimate-steps", metavar="N", type=int,
                   help="with --estimate: steps timed per model, after one warm-up step "
                        "(default 5)")
    add_deep_check_option(p)
    add_plugin_option(p)
    add_override_options(p)
    p.set_defaults(func=run_plan)


def add_deep_check_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deep-data-check", action="store_true",
                   help="decode every image of the data folders once before going on (the "
                   "result is remembered per data content, so the next time is instant)")


def run_plan(args: argparse.Namespace) -> int:
    from ablate.cli.run import check_not_a_file
    from ablate.errors import AblateError
    from ablate.plan import load_plan

    steps = _estimate_steps(args)
    if args.deep_data_check and args.no_data_check:
        raise AblateError("--deep-data-check decodes the data folders that --no-data-check "
                          "skips", key="--deep-data-check", hint="drop one of the two")
    sweep, trials = load_plan(args.sweep, confirm=args.yes, check_data=not args.no_data_check,
                              plugins=tuple(args.plugin), **plan_options(args))
    if args.deep_data_check:
        deep_check_data(trials)
    results = args.results or str(sweep.results_dir)
    check_not_a_file(Path(results), "--results" if args.results else "results_dir")
    report = build_report(sweep, trials, results, stats=not args.no_stats)
    report["sweep"]["overrides"] = override_flags(args)
    if args.estimate:
        report["estimate"] = estimate(sweep, trials, device=args.device, steps=steps)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(render(report))
    return 0


def _estimate_steps(args: argparse.Namespace) -> int:
    """The steps --estimate times (default 5); the estimate's options checked on the way."""
    from ablate.errors import AblateError

    if not args.estimate and (args.device is not None or args.estimate_steps is not None):
        flag = "--device" if args.device is not None else "--estimate-steps"
        raise AblateError(f"{flag} is an option of --estimate", key=flag,
                          hint="add --estimate, or leave the option out")
    steps = 5 if args.estimate_steps is None else args.estimate_steps
    if not 1 <= steps <= 1000:
        raise AblateError(f"{steps} steps cannot be timed", key="--estimate-steps",
                          hint="give a number of steps from 1 to 1000")
    return steps


def estimate(sweep: Any, trials: list, *, device: str | None, steps: int) -> dict[str, Any]:
    """``--estimate``: time each distinct step here and scale it to every trial's data size."""
    from ablate.estimate import DataSize, EstimateError, estimate_sweep

    sizes, by_data = {}, {}
    for t in trials:
        d = t.config.data
        if d not in by_data:
            by_data[d] = _data_size(d)
        if by_data[d] is None:
            raise EstimateError(f"the size of data folder {d.root} is not known (trial "
                                f"{t.id} [{t.arm}])", key="data.root",
                                hint="make the folder readable here, or leave out --estimate")
        sizes[t.id] = DataSize(*by_data[d])
    cost = estimate_sweep(trials, sizes, device=device, steps=steps,
                          max_concurrent=sweep.max_concurrent)
    return cost.to_dict()


def _data_size(data: Any) -> tuple[int, int, int] | None:
    """(training images, validation images, classes) as the planner counts them, or None."""
    from ablate import plan
    from ablate.datafiles import folder_listing

    folder = None
    if data.name == "imagefolder" and data.root:
        try:
            listing = folder_listing(Path(data.root).expanduser())
        except OSError:
            return None
        folder = (len(listing["train"]), len(listing["val"]))
    sizes = plan.split_sizes(data, folder)
    classes = plan.num_classes(data) or 4  # synthetic's default (ablate.data)
    return (*sizes[0], classes) if sizes is not None else None


def deep_check_data(trials: list) -> None:
    """Decode every image of the trials' data folders once; one line per folder on stderr."""
    from ablate.deepcheck import check_data

    seen = set()
    for t in trials:
        data = t.config.data
        if data in seen or not data.root or not t.data_fingerprint:
            continue
        seen.add(data)
        bar = _ProgressBar(f"decoding {data.root}", tty=sys.stderr.isatty())
        result = check_data(data, t.data_fingerprint, deep=True, on_progress=bar.update)
        bar.close()
        when = "checked before" if result.cached else "checked now"
        print(f"ablate: data {data.root}: {result.images} images, all readable ({when})",
              file=sys.stderr)


class _ProgressBar:
    """``label [#####.....] done/total`` redrawn on a terminal, at most 10 times a second."""

    def __init__(self, label: str, *, tty: bool) -> None:
        self.label, self.tty, self.shown, self.last = label, tty, False, 0.0

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty or (now - self.last < 0.1 and done < total):
            return
        self.last, self.shown = now, True
        filled = 30 * done // max(total, 1)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                         f"{done}/{total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def build_report(sweep: Any, trials: list, results_dir: str, *, stats: bool) -> dict[str, Any]:
    """Everything ``ablate plan`` shows, as plain JSON-ready data."""
    from ablate import record
    from ablate.bookkeeping import begun_changes, config_changes
    from ablate.plan import run_action, trial_states

    states = trial_states(trials, results_dir)
    rows = []
    for t in trials:
        legacy = record.legacy_dir(results_dir, t)
        changed = (config_changes(Path(results_dir), t) if states[t.id] in record.FINISHED
                   else begun_changes(Path(results_dir), t) if states[t.id] != record.NEW
                   else {})
        rows.append({"id": t.id, "label": t.arm, "role": t.role, "seed": t.config.seed,
                     "varied": t.varied, "state": states[t.id],
                     "action": "stop" if changed and states[t.id] not in record.FINISHED
                     else run_action(states[t.id]), "expected": t.expected,
                     "config": t.config.to_dict(), "data_fingerprint": t.data_fingerprint,
                     "legacy_id": legacy.name if legacy else None,
                     "changed": {k: list(v) for k, v in changed.items()}})
    claims = []
    if any(s == "done" for s in states.values()):
        from dataclasses import asdict

        from ablate.report import plan_claims

        # strict JSON for --json: an undecided claim's detectable is null when no difference
        # is detectable at its seeds (inf in the Claim)
        claims = [{**asdict(c), "detectable": None if c.detectable == math.inf else
                   c.detectable} for c in plan_claims(trials, results_dir)]
    return {
        "sweep": {"name": sweep.name, "description": sweep.description,
                  "path": str(sweep.path), "results_dir": results_dir,
                  "folder_holds": _other_sweep(Path(results_dir), sweep.name),
                  "seeds": list(sweep.seeds), "max_trials": sweep.max_trials,
                  "max_concurrent": sweep.max_concurrent, "max_retries": sweep.max_retries,
                  "resources": {"cpus": sweep.resources.cpus, "gpus": sweep.resources.gpus,
                                "workers": sweep.resources.workers,
                                "cpus_per_worker": sweep.resources.worker_cpus,
                                "gpus_per_worker": sweep.resources.worker_gpus}},
        "trials": rows,
        "totals": _totals(rows),
        "models": _model_stats(trials) if stats else [],
        "claims": claims,
    }


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def count(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in rows:
            out[r[key]] = out.get(r[key], 0) + 1
        return out

    return {"trials": len(rows), "labels": len({r["label"] for r in rows}),
            "seeds": len({r["seed"] for r in rows}), "states": count("state"),
            "actions": count("action")}


def _model_stats(trials: list) -> list[dict[str, Any]]:
    import dataclasses

    from ablate.modelcache import ModelCache
    from ablate.plan import num_classes
    from ablate.plugins import loaded_plugins

    cache = ModelCache(loaded_plugins())
    out, seen = [], set()
    for t in trials:
        m, d = t.config.model, t.config.data
        classes = num_classes(d)
        key = (m, d.img_size, classes)
        if key in seen:
            continue
        seen.add(key)
        row = {"arch": m.arch, "axes": m.axes(), "img_size": d.img_size,
               "num_classes": classes, "params": None, "flops": None}
        if classes is not None:
            config = {"model": dataclasses.asdict(m), "img_size": d.img_size,
                      "num_classes": classes}
            counts = cache.get("stats", config)
            if counts is None:
                from ablate.models import model_stats  # imports torch and timm

                s = model_stats(m.arch, num_classes=classes, img_size=d.img_size, **m.axes())
                counts = {"params": s.params, "flops": s.flops}
                cache.put("stats", config, counts)
            row |= counts
        out.append(row)
    cache.save()
    return out


def _other_sweep(results: Path, name: str) -> str | None:
    """The name of the other sweep whose manifest the results folder holds, if it does."""
    from ablate import bookkeeping
    from ablate.errors import AblateError

    try:
        return bookkeeping.other_sweep(results, name)
    except AblateError:  # unreadable: status and run say so, and how to rewrite it
        return None


def render(report: dict[str, Any]) -> str:
    """The report as text: a header, one line per trial, the totals and the models."""
    s = report["sweep"]
    lines = [f"sweep {s['name']}: {s['description']}", f"  file {s['path']}; results "
             f"{s['results_dir']}; per trial {_per_trial(s['resources'])}; at most "
             f"{s['max_concurrent'] or 'any'} at once"]
    if s.get("overrides"):
        lines.append("  overrides: " + " ".join(s["overrides"]))
    lines.append("")
    rows = report["trials"]
    axes = list(rows[0]["varied"]) if rows else []
    head = ["id", "label", *[a.split(".", 1)[1] for a in axes], "seed", "state", "action",
            "expected"]
    table = [[r["id"], r["label"] + (" *" if r["role"] == "baseline" else ""),
              *[_fmt(r["varied"].get(a)) for a in axes], str(r["seed"]), r["state"],
              r["action"], _expected(r["expected"])] for r in rows]
    lines += _table(head, table)
    t = report["totals"]
    lines += ["", f"{t['trials']} trials: {t['labels']} labels x {t['seeds']} seeds "
              "(* = baseline)",
              "states: " + ", ".join(f"{k} {v}" for k, v in sorted(t["states"].items())),
              "a run would: " + ", ".join(f"{k} {v}" for k, v in sorted(t["actions"].items()))]
    if s.get("folder_holds"):
        lines.append(f"  (the results folder holds sweep '{s['folder_holds']}': 'ablate run' "
                     "adds these trials to it only with --yes)")
    lines += _id_notes(rows)
    lines += _claim_lines(report["claims"])
    if report.get("estimate"):
        lines += _estimate_lines(report["estimate"])
    if report["models"]:
        lines += ["", "models:"]
        lines += _table(["arch", "axes", "img", "classes", "params", "FLOPs (mult-adds)"], [
            [m["arch"], ",".join(f"{k}={_fmt(v)}" for k, v in m["axes"].items()) or "-",
             str(m["img_size"]), str(m["num_classes"]), _si(m["params"]), _si(m["flops"])]
            for m in report["models"]])
    return "\n".join(lines)


def _per_trial(r: dict[str, Any]) -> str:
    """'1 CPU, 0 GPU', or '8 workers x (8 CPU, 1 GPU)' for a data-parallel trial."""
    cpus, gpus = r.get("cpus_per_worker", r["cpus"]), r.get("gpus_per_worker", r["gpus"])
    one = f"{cpus:g} CPU, {gpus:g} GPU"
    workers = r.get("workers", 1)
    return one if workers == 1 else f"{workers} workers x ({one})"


def _changed_lines(rows: list[dict[str, Any]]) -> list[str]:
    from ablate.bookkeeping import describe_changes

    lines = [f"  {r['id']} [{r['label']}]: {describe_changes(r['changed'])}" for r in rows[:10]]
    return lines + (["  ..."] if len(rows) > 10 else [])


def _id_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Lines on finished trials whose configuration changed, 0.1-era folders, and ids that
    are provisional because the data was not looked at."""
    from ablate.record import FINISHED

    out = []
    changed = [r for r in rows if r["changed"] and r["state"] in FINISHED]
    if changed:
        out += ["", f"{len(changed)} trials were recorded with another configuration than the "
                "plan's now (a default changed?); 'ablate run' keeps their results, "
                "'ablate run --rerun-changed' reruns them:"]
        out += _changed_lines(changed)
    begun = [r for r in rows if r["changed"] and r["state"] not in FINISHED]
    if begun:
        out += ["", f"{len(begun)} unfinished trials have checkpoints trained under another "
                "configuration than the plan's now; 'ablate run' refuses to resume them, "
                "'ablate reset --trial ID' or 'ablate run --rerun-changed' starts them afresh:"]
        out += _changed_lines(begun)
    legacy = [r for r in rows if r["legacy_id"]]
    if legacy:
        out += ["", f"{len(legacy)} trials are recorded under the ids of ablate 0.1; the next "
                "'ablate run' renames their folders to the ids above (nothing is recomputed)"]
    if any(r["config"]["data"]["root"] and not r["data_fingerprint"] for r in rows):
        out += ["", "ids of trials on folder data are provisional: the data was not looked at "
                "(--no-data-check), and ids hash the folder's content"]
    return out


def _estimate_lines(est: dict[str, Any]) -> list[str]:
    """Per trial its estimated wall time and device-hours; then the sweep's, at concurrency."""
    load = est["machine"].get("load_avg")
    busy = f", load average {load:.1f} on {est['machine']['cpus']:g} CPUs" if load else ""
    out = ["", f"estimate, from {est['steps']} timed steps of each of {est['measured']} "
           f"distinct models on this machine (one warm-up step not counted{busy}):"]
    out += _table(["id", "label", "seed", "device", "steps/epoch", "epoch", "wall", "device-h"],
                  [[r["id"], r["arm"], str(r["seed"]),
                    r["device"], str(r["steps_per_epoch"]), _duration(r["epoch_s"]),
                    _duration(r["wall_s"]), f"{r['device_hours']:.3f} {r['unit']}"]
                   for r in est["trials"]])
    m, total = est["machine"], sum(r["wall_s"] for r in est["trials"])
    hours = ", ".join(f"{h:.3f} {u}-hours" for u, h in sorted(est["device_hours"].items()))
    at_once = f"at most {m['max_concurrent']} at once, " if m["max_concurrent"] else ""
    out += [f"sweep: {len(est['trials'])} trials, {_duration(total)} of trial time, {hours}; "
            f"about {_duration(est['makespan_s'])} of wall time ({at_once}{m['cpus']:g} CPUs "
            f"and {m['gpus']:g} GPUs here)",
            "included: model build, training steps (Mixup/CutMix, AMP as the trial), "
            "evaluation, the per-epoch checkpoint; not included: " + est["not_included"]]
    return out


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _claim_lines(claims: list[dict[str, Any]]) -> list[str]:
    """The claims as the finished trials decide them, and the seeds an undecided one needs."""
    if not claims:
        return []
    out = ["", "claims, from the finished trials (ablate report explains the tests):"]
    for c in claims:
        margin = f" ± {c['margin']:g}" if c["margin"] else ""
        line = f"  {c['arm']} {c['op']} {c['than']}{margin} ({c['metric']}, n {c['n_arm']} vs " \
               f"{c['n_than']}): {c['verdict']}"
        if c["verdict"] == "not decided":
            found = c["detectable"]
            line += f"; {c['seeds_needed'] or 'more than 1000'} seeds per arm would decide it, " + \
                ("the current ones detect no difference" if found is None else
                 f"the current ones detect {found:.2f}")
        out.append(line)
    return out


def _expected(expected: dict[str, Any] | None) -> str:
    """{"val/top1": 81.2} -> "val/top1 81.2"; a direction -> "val/top1 > LABEL"."""
    def claim(v: dict[str, Any]) -> str:
        return f"{v['op']} {v['than']}" + (f" ± {v['margin']:g}" if "margin" in v else "")

    return "; ".join(f"{m} {claim(v)}" if isinstance(v, dict) else f"{m} {v:g}"
                     for m, v in (expected or {}).items())


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip()
            for row in (head, *rows)]


def _fmt(v: Any) -> str:
    return {True: "true", False: "false", None: "-"}.get(v, str(v)) \
        if isinstance(v, bool) or v is None else str(v)


def _si(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
