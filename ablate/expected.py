"""The language of a sweep's ``expected:`` section: the paper's numbers and claims.

Per trial label, a metric (``split/name``, one a trial records) maps to the paper's number, or
to a claim between two trials' labels: ``"> LABEL"``, ``"< LABEL"`` or ``"~ LABEL ± MARGIN"``
(about equal within MARGIN, in the metric's units; ``+-`` and ``+/-`` work too). How a claim is
decided is ablate.stats's concern; this module only reads and writes the words.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ablate.errors import closest
from ablate.record import METRICS
from ablate.sweepfile import KeyPath, _show

DIRECTION = re.compile(r"^\s*(>|<|~)\s*(\S.*?)\s*$")
MARGIN = re.compile(r"^(.*?)\s*(?:±|\+-|\+/-)\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
                    r"(?:[eE][-+]?[0-9]+)?)\s*$")
ALPHA = 0.05  # the claims' significance level unless the sweep sets alpha:
METRIC = re.compile(r"^[A-Za-z0-9_]+/[A-Za-z0-9_.]+$")


def parse_expected(label: str, metrics: dict[str, Any], err: Any,
                    alpha: float = ALPHA) -> dict[str, Any]:
    """number -> number; "> LABEL" -> {"op": ">", "than": LABEL}; "~ LABEL ± 0.5" also gets
    "margin": 0.5. A claim gets "alpha" when the sweep's differs from the default."""
    out: dict[str, Any] = {}
    for metric, value in metrics.items():
        if not METRIC.match(metric):
            raise err(f"metric '{metric}' is not of the form split/name", "expected", label,
                      metric, hint="e.g. val/top1")
        if metric not in METRICS:
            raise err(f"metric '{metric}' is never recorded", "expected", label, metric,
                      hint=(f"did you mean '{near}'? " if (near := closest(metric, METRICS))
                            else "") + f"a trial records {', '.join(METRICS)}")
        out[metric] = _parse_claim(value, err, ("expected", label, metric)) \
            if isinstance(value, str) else value
        if isinstance(out[metric], dict) and out[metric]["than"] == label:
            raise err(f"the claim compares '{label}' with itself", "expected", label, metric,
                      hint="name another trial's label after the operator")
        if isinstance(out[metric], dict) and alpha != ALPHA:
            out[metric]["alpha"] = alpha
    return out


def _parse_claim(value: str, err: Any, at: KeyPath) -> dict[str, Any]:
    m = DIRECTION.match(value)
    if not m:
        raise err(f"expected a number or a claim '> LABEL', '< LABEL' or '~ LABEL ± MARGIN', "
                  f"got {_show(value)}", *at)
    op, than = m.group(1), m.group(2)
    margin = MARGIN.match(than)
    if margin:
        than = margin.group(1)
    if op == "~" and not margin:
        raise err(f"'~' (about equal) needs a margin in the metric's units, got {_show(value)}",
                  *at, hint=f"e.g. \"~ {than} ± 0.5\": agreed when the difference is shown to "
                  "lie within ±0.5")
    if op != "~" and margin:
        raise err(f"a margin applies to '~' only, got {_show(value)}", *at,
                  hint=f"write \"{op} {than}\"")
    out: dict[str, Any] = {"op": op, "than": than}
    if margin:
        out["margin"] = float(margin.group(2))
        if not math.isfinite(out["margin"]):
            raise err(f"the margin must be a finite number, got {_show(value)}", *at,
                      hint="give the margin in the metric's units, e.g. ± 0.5")
        if out["margin"] <= 0:
            raise err(f"the margin must be > 0, got {_show(value)}", *at)
    return out


def expected_to_yaml(expected: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """parse_expected's output written back as a sweep file would hold it."""
    def claim(v: dict[str, Any]) -> str:
        return f"{v['op']} {v['than']}" + (f" ± {v['margin']!r}" if "margin" in v else "")

    return {label: {m: (claim(v) if isinstance(v, dict) else v) for m, v in metrics.items()}
            for label, metrics in expected.items()}
