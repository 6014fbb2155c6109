"""The project's own errors: a user's mistake becomes one line on stderr and exit status 2.

Anything raised that is not an :class:`AblateError` is a bug and keeps its traceback.
Every error carries the data needed to act on it (file, line, key path, trial id) and a hint
saying what to do next; ``str(err)`` renders all of it as one line.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path


class AblateError(Exception):
    """Base of every user-facing error. Rendered as ``file:line: key: what; hint``."""

    def __init__(
        self,
        what: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(what)
        self.what = what
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        self.hint = hint

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        parts = [p for p in (where, self.key) if p]
        head = ": ".join(parts)
        text = f"{head}: {self.what}" if head else self.what
        if self.hint:
            text += f"; {self.hint}"
        return " ".join(text.split())  # one line, always


class SpecError(AblateError):
    """A sweep file is malformed or describes an impossible plan."""


class ModelConfigError(AblateError, ValueError):
    """A model or mixer was asked for with names or values it does not support."""


class DataError(AblateError):
    """A data folder is missing or not laid out as expected."""


class UnreadableImage(DataError):
    """An image file that cannot be decoded (met by the loader, or by a data check).

    torch's DataLoader re-raises a worker's exception as ``Type(text)``, where the text is
    "Caught Type in DataLoader worker process N. Original Traceback ..." ending with the
    original's one-line rendering; the constructor recovers that line, so an error from a
    worker reads exactly like one from the main process.
    """

    def __init__(self, what: str, *, file: str | Path | None = None,
                 hint: str | None = None, **kw) -> None:
        if file is None and what.startswith("Caught ") and "Traceback" in what:
            last = what.strip().splitlines()[-1]
            line = last.split(": ", 1)[1] if last.startswith(("ablate.", type(self).__name__)) \
                else last
            where, sep, rest = line.partition(": ")
            file, what = (where, rest) if sep else (None, line)
        super().__init__(what, file=file, hint=hint, **kw)


class RecordError(AblateError):
    """A trial record or results folder is missing, corrupt or of an unknown version."""


class ClusterError(AblateError):
    """The Ray cluster named by the user cannot be joined."""


class TrialError(AblateError):
    """A trial cannot be started as asked (unknown id, conflicting state)."""


def first_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says, or its type's name when it says nothing."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the valid choice nearest to ``name``, or None when none is close."""
    match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


def unknown_name_hint(name: str, choices: Iterable[str]) -> str:
    """A hint listing the valid names and the nearest one: 'did you mean X? valid: a, b, c'."""
    choices = sorted(choices)
    near = closest(name, choices)
    listing = ", ".join(choices)
    return (f"did you mean '{near}'? " if near else "") + f"valid: {listing}"


NAME_MAX, PATH_MAX = 255, 4095  # bytes, as Linux file systems take them


def path_problem(text: str) -> str | None:
    """Why no file system could hold the path ``text`` (a NUL byte, a name over 255 bytes, a
    path over 4095), else None: such a path raises ValueError or OSError from the first call
    that touches it, so it is refused where it is written."""
    if "\0" in text:
        return "holds a NUL character"
    raw = os.fsencode(text)
    if len(raw) > PATH_MAX:
        return f"is {len(raw)} bytes long, more than a path may be ({PATH_MAX})"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"has a name of {len(longest)} bytes, more than a file name may be ({NAME_MAX})"
    return None
