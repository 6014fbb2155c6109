"""Why a trial failed, and whether trying again could help.

A failure is one of :data:`KINDS`. Out-of-memory and a killed worker depend on what else ran on
the machine at the time, so the runner retries them (from the trial's last checkpoint); an
error in the code, the configuration or the data, and a divergence, would happen again exactly
the same way, so retrying would only burn compute: they are recorded and left for the user.

Pure: works on exceptions and on the ``error`` dicts of ``state.json`` alike, by type *names*,
so it needs neither torch nor ray (their exception types are recognised by name).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

OOM, KILLED, DIVERGED, DATA, CONFIG, CODE = "oom", "killed", "diverged", "data", "config", "code"
KINDS = (OOM, KILLED, DIVERGED, DATA, CONFIG, CODE)
RETRIED = (OOM, KILLED)  # the only kinds where another attempt may succeed

# Exception type names (any class in the MRO) -> kind. Checked in this order.
_TYPE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (OOM, ("OutOfMemoryError", "MemoryError")),
    (KILLED, ("RayActorError", "ActorDiedError", "WorkerCrashedError", "NodeDiedError",
              "ActorUnavailableError", "ActorUnschedulableError", "LocalRayletDiedError")),
    (DIVERGED, ("FloatingPointError", "Diverged", "DivergedError")),
    (DATA, ("DataError", "UnreadableImage", "UnidentifiedImageError", "FileNotFoundError",
            "NotADirectoryError", "EOFError", "UnpicklingError")),
    (CONFIG, ("ModelConfigError", "SpecError", "TrialError", "RecordError")),
)
# Message fragments (lower case) that identify a kind whatever the exception type: torch raises
# plain RuntimeErrors for both of these.
_MESSAGE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (OOM, ("out of memory", "cannot allocate memory", "oom killer", "memory pressure")),
    (KILLED, ("killed by signal", "sigkill", "worker died", "actor died",
              "worker exited unexpectedly", "worker unexpectedly exits")),
)


@dataclass(frozen=True)
class Failure:
    """A classified failure: its kind, whether it is deterministic, and its first line."""

    kind: str
    type: str  # the exception's class name
    message: str

    @property
    def deterministic(self) -> bool:
        return self.kind not in RETRIED

    @property
    def first_line(self) -> str:
        """``Type: first line of the message``, the line a summary shows."""
        lines = self.message.strip().splitlines()
        return f"{self.type}: {lines[0]}" if lines else self.type


def _unwrap(exc: BaseException) -> BaseException:
    """The original error inside Ray's and Tune's wrappers (``.cause``, ``__cause__``)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _kind_of(type_names: Iterable[str], message: str) -> str:
    names = set(type_names)
    for kind, candidates in _TYPE_KINDS:
        if names.intersection(candidates):
            return kind
    text = message.lower()
    for kind, fragments in _MESSAGE_KINDS:
        if any(f in text for f in fragments):
            return kind
    return CODE


def classify_exception(exc: BaseException) -> Failure:
    """Classify a raised exception (unwrapping Ray/Tune wrappers to the original error)."""
    exc = _unwrap(exc)
    names = [cls.__name__ for cls in type(exc).__mro__]
    message = str(exc)
    return Failure(kind=_kind_of(names, message), type=type(exc).__name__, message=message)


def classify_record(error: dict[str, Any]) -> Failure:
    """Classify a ``state.json`` error dict ``{type, message, traceback, kind?}``.

    A ``kind`` already in the record wins (the runner stored it when the trial failed); else the
    type name, the message and the traceback's last line decide.
    """
    type_name = str(error.get("type") or "Error")
    message = str(error.get("message") or "")
    kind = error.get("kind")
    if kind not in KINDS:
        tb_tail = str(error.get("traceback") or "").strip().splitlines()[-1:]
        kind = _kind_of([type_name.rsplit(".", 1)[-1]], " ".join([message, *tb_tail]))
    return Failure(kind=kind, type=type_name.rsplit(".", 1)[-1], message=message)


def group_by_first_line(failures: dict[str, Failure]) -> list[tuple[str, list[str]]]:
    """Trial ids grouped by their failure's first line, most frequent first, ties by line."""
    groups: dict[str, list[str]] = {}
    for trial_id, failure in failures.items():
        groups.setdefault(failure.first_line, []).append(trial_id)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
