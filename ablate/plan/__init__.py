"""Planning: a :class:`~ablate.spec.Sweep` expanded into ordered, checked :class:`Trial` s.

Expansion is arms (the baseline first) x grid (cartesian, file order) x paired (zipped) x seeds,
minus the excluded trials. Role "baseline": with arms, every trial of the baseline arm; without,
the trial at the first value of every grid and paired axis. Order: by seed, baselines before
arms within a seed, then file order; so every arm's first seed runs before any repeat. Trial ids
are ``TrialConfig.trial_id()``: a hash of what determines the result (see ``ablate.config``),
so labels, order, the sweep's name and operational settings do not change them. A data folder
enters the id through the fingerprint of its content, computed here when folders are checked;
a plan made without the data (``check_data=False``) has provisional ids for folder data.

The expansion is :mod:`ablate.plan.expand`'s; the checks, each a one-line SpecError pointing
at the key that caused it, are :mod:`ablate.plan.checks`' (recipes, data folders, the
expected-result labels, duplicate trials) and :mod:`ablate.plan.modelchecks`' (models and their
axis combinations at their image sizes, and trials whose axes only restate the model's
defaults, so that they build another trial's network again);
an empty plan and the size limit ``max_trials`` (unless ``confirm``) are checked here. Nothing
in the package prints, imports Ray, or builds a model's weights (the model checks run on the
meta device).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ablate.config import Trial
from ablate.errors import SpecError, closest
from ablate.plan import checks, modelchecks
from ablate.plan.checks import num_classes, split_sizes  # noqa: F401  (part of the API)
from ablate.plan.expand import apply_exclude, expand
from ablate.plugins import load_plugins
from ablate.record import (
    CORRUPT,
    DAMAGED,
    DIVERGED,
    DONE,
    FAILED,
    INTERRUPTED,
    NEW,
    RUNNING,
    trial_state,
)
from ablate.spec import Sweep, load_sweep

ACTIONS = {NEW: "start", DONE: "skip", DIVERGED: "skip", FAILED: "resume",
           INTERRUPTED: "resume", RUNNING: "resume",
           CORRUPT: "stop", DAMAGED: "stop"}  # run refuses until the record is repaired


def load_plan(path: str | Path, *, confirm: bool = False, check_data: bool = True,
              plugins: tuple[str, ...] = (), overrides: tuple[str, ...] = (),
              only: tuple[str, ...] = (), seeds: tuple[int, ...] = ()
              ) -> tuple[Sweep, list[Trial]]:
    """Load, validate and plan a sweep file; the Sweep comes back with ``trials`` filled.

    ``plugins``: modules to load besides the sweep's own (``--plugin``); ``overrides``:
    ``KEY=VALUE`` texts set on the file (``--set``); ``only`` and ``seeds``: keep part of the
    plan (``--only``, ``--seeds``; see :func:`select_trials`).
    """
    sweep = load_sweep(path, overrides)
    if plugins:
        load_plugins(plugins, source="--plugin")
        sweep = dataclasses.replace(sweep, plugins=tuple(dict.fromkeys(
            (*sweep.plugins, *plugins))))
    trials = plan_trials(sweep, confirm=confirm, check_data=check_data, only=only,
                         seeds=seeds)
    return dataclasses.replace(sweep, trials=tuple(trials)), trials


def plan_trials(sweep: Sweep, *, confirm: bool = False, check_data: bool = True,
                only: tuple[str, ...] = (), seeds: tuple[int, ...] = ()) -> list[Trial]:
    """The sweep's trials in run order; SpecError for any impossible or suspicious plan.

    ``check_data=False`` skips the existence checks of data folders (to plan a paper-scale
    sweep on a machine without ImageNet); ``confirm`` lifts the ``max_trials`` limit.
    ``only``/``seeds`` keep part of the plan; the checks after that see only that part.
    """
    load_plugins(sweep.plugins, source=str(sweep.path))  # they may define mixers and models
    kept = apply_exclude(sweep, list(expand(sweep)))
    if not kept:
        raise sweep.error("the plan is empty: every trial is excluded", "exclude")
    checks.check_expected(sweep, {c.label for c in kept})
    if only or seeds:
        kept = select_trials(kept, only, seeds, label=lambda c: c.label,
                             seed=lambda c: c.config.seed)
    from ablate.modelcache import ModelCache
    from ablate.plugins import loaded_plugins

    # what earlier plans learned about these models (read once; each check saves its part)
    cache = ModelCache(loaded_plugins())
    checks.check_recipes(sweep, kept, cache)
    modelchecks.check_models(sweep, kept, cache)
    fingerprints, folder_sizes = checks.check_data(sweep, kept, check_data)
    checks.check_splits(sweep, kept, folder_sizes)
    checks.check_duplicates(sweep, kept, fingerprints)
    modelchecks.check_same_models(sweep, kept, fingerprints, cache)
    if len(kept) > sweep.max_trials and not confirm:
        raise sweep.error(f"the plan has {len(kept)} trials, more than max_trials="
                          f"{sweep.max_trials}", "max_trials",
                          hint="check the grid and exclusions, raise max_trials, or confirm "
                          "with --yes")
    kept.sort(key=lambda c: c.order)
    return [Trial(config=c.config, sweep=sweep.name, arm=c.label, varied=c.varied, role=c.role,
                  resources=sweep.resources, expected=sweep.expected.get(c.label),
                  data_fingerprint=fingerprints.get(c.config.data), plugins=sweep.plugins)
            for c in kept]


def trial_states(trials: list[Trial], results_dir: str | Path) -> dict[str, str]:
    """Trial id -> its recorded state (new, running, done, failed, diverged)."""
    return {t.id: trial_state(results_dir, t).state for t in trials}


def run_action(state: str) -> str:
    """What ``ablate run`` does with a trial in ``state``: start, skip or resume."""
    return ACTIONS.get(state, "start")



def select_trials(items: list, only: tuple[str, ...], seeds: tuple[int, ...], *,
                  label: Any, seed: Any, flag: str = "--only") -> list:
    """The items whose label matches a name of ``only`` and whose seed is in ``seeds`` (an
    empty filter keeps all); ``label``/``seed`` read them from an item, and ``flag`` names
    the option ``only`` came from in errors.

    A name matches a whole label (``se, kernel_size=3``) or one of its comma-separated parts
    (``se``: the arm; ``kernel_size=3``: a grid value). Each text of ``only`` may list several
    names, joined by commas; a label that itself holds commas may be given whole. A name or a
    seed that matches nothing is a SpecError naming its flag and the closest choice.
    """
    labels = {label(i) for i in items}
    names = labels | {p for lab in labels for p in lab.split(", ")}
    for text in only:  # '' or ',' (an empty shell variable) must not mean "every trial"
        if not _split_names(text, names):
            raise SpecError("an empty label selects nothing", key=f"{flag} {text!r}",
                            hint=f"give {flag} a label ('ablate plan' lists them), or leave "
                            f"{flag} out")
    wanted = [(text, n) for text in only for n in _split_names(text, names)]
    for text, n in wanted:
        if n not in names:
            near = closest(n, names)
            raise SpecError(f"no trial is labelled '{n}'", key=f"{flag} {text}",
                            hint=(f"did you mean '{near}'? " if near else "")
                            + "'ablate plan' lists the labels")
    seeds_flag = "--seeds " + ",".join(map(str, seeds))
    plan_seeds = sorted({seed(i) for i in items})
    for s in seeds:
        if s not in plan_seeds:
            raise SpecError(f"the plan has no seed {s}", key=seeds_flag,
                            hint=f"its seeds are {', '.join(map(str, plan_seeds))}; to add "
                            "seeds, --set seeds=[...]")
    picked = {n for _, n in wanted}
    kept = [i for i in items if (not picked or label(i) in picked
                                 or picked & set(label(i).split(", ")))
            and (not seeds or seed(i) in seeds)]
    if not kept:
        flags = [f"{flag} {t}" for t in only] + ([seeds_flag] if seeds else [])
        raise SpecError("no trial matches all of the selection", key=" ".join(flags),
                        hint="'ablate plan' lists each trial's label and seed")
    return kept


def _split_names(text: str, names: set[str]) -> list[str]:
    """``a, x=1,b`` -> the longest runs of comma-separated pieces that are names."""
    pieces = [p.strip() for p in text.split(",")]
    out, i = [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i, -1)
                  if ", ".join(pieces[i:j]) in names), i + 1)
        out.append(", ".join(pieces[i:j]))
        i = j
    return [n for n in out if n]
