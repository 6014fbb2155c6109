"""Why a trial failed, and whether trying again could help.

A failure is one of :data:`KINDS`. Out-of-memory and a killed worker (the trial's own process
or one of its data-loader processes, the usual victims of the kernel's out-of-memory killer)
depend on what else ran on the machine at the time, so the runner retries them (from the
trial's last checkpoint); an error in the code, the configuration or the data, and a
divergence, would happen again exactly the same way, so retrying would only burn compute: they
are recorded and left for the user. A full disk is its own kind: retrying cannot help until
someone frees space, so it is recorded with :data:`HINTS` saying so.

Pure: works on exceptions and on the ``error`` dicts of ``state.json`` alike, by type *names*,
so it needs neither torch nor ray (their exception types are recognised by name).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

OOM, KILLED, DIVERGED, DATA, CONFIG, CODE = "oom", "killed", "diverged", "data", "config", "code"
DISK = "disk"
KINDS = (OOM, KILLED, DISK, DIVERGED, DATA, CONFIG, CODE)
RETRIED = (OOM, KILLED)  # the only kinds where another attempt may succeed
RECURRING = (DATA, CONFIG, CODE)  # fail the same way again until someone changes something
# What to do about a kind, where the first line of the error does not say it already.
HINTS = {DISK: "the disk is full: free space where the results folder is, then resume"}
ENOSPC = 28  # errno "No space left on device" (Linux, macOS)

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
              "worker exited unexpectedly", "worker unexpectedly exits",
              # torch's DataLoader when a loader process vanished: "DataLoader worker (pid(s)
              # 123) exited unexpectedly" (its cause is an empty queue.Empty)
              "exited unexpectedly")),
    # torch.save on a full disk fails in its zip writer (caffe2/serialize/inline_container.cc)
    # with "file write failed" or "unexpected pos"; the OSError of a plain write says ENOSPC
    (DISK, ("no space left on device", "errno 28", "enospc", "file write failed",
            "unexpected pos")),
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
    def hint(self) -> str | None:
        """What to do next, for the kinds where the error itself does not say it."""
        return HINTS.get(self.kind)

    @property
    def first_line(self) -> str:
        """``Type: first line of the message``, the line a summary shows."""
        lines = self.message.strip().splitlines()
        return f"{self.type}: {lines[0]}" if lines else self.type


def _chain(exc: BaseException) -> list[BaseException]:
    """The error and the ones inside it, outermost first: Ray's and Tune's wrappers (``.cause``)
    and Python's ``raise ... from`` (``__cause__``)."""
    chain: list[BaseException] = []
    while not any(e is exc for e in chain):
        chain.append(exc)
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return chain


def _is_wrapper(exc: BaseException) -> bool:
    # Ray's wrappers hold the original in ``.cause`` and repeat its traceback in their message,
    # where any source line could look like a fragment of _MESSAGE_KINDS: only their type counts.
    return isinstance(getattr(exc, "cause", None), BaseException)


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
    """Classify a raised exception by every error in its chain, innermost first.

    The first error of the chain that names a kind decides, and is the one the failure shows
    (a DataLoader's "worker exited unexpectedly" rather than the empty queue beneath it);
    when none does, the innermost error is shown as a code error.
    """
    chain = _chain(exc)
    for e in reversed(chain):
        names = [cls.__name__ for cls in type(e).__mro__]
        message = "" if _is_wrapper(e) else str(e)
        if getattr(e, "errno", None) == ENOSPC:
            return Failure(kind=DISK, type=type(e).__name__, message=str(e))
        kind = _kind_of(names, message)
        if kind != CODE:
            return Failure(kind=kind, type=type(e).__name__, message=str(e))
    original = chain[-1]
    return Failure(kind=CODE, type=type(original).__name__, message=str(original))


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
