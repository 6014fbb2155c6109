"""Failure classification: which errors are retried, which are recorded and left alone."""

from __future__ import annotations

import pytest

from ablate.errors import DataError, ModelConfigError, SpecError
from ablate.failures import (
    CODE,
    CONFIG,
    DATA,
    DIVERGED,
    KILLED,
    OOM,
    Failure,
    classify_exception,
    classify_record,
    group_by_first_line,
)


class OutOfMemoryError(RuntimeError):  # named like torch's and ray's
    pass


class RayActorError(Exception):  # named like ray's: a worker died
    pass


class RayTaskError(Exception):  # ray's wrapper: the original error is in .cause
    def __init__(self, cause):
        super().__init__("wrapped")
        self.cause = cause


@pytest.mark.parametrize("exc, kind", [
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), OOM),
    (MemoryError(), OOM),
    (RuntimeError("CUDA out of memory"), OOM),
    (RayActorError("The actor died unexpectedly"), KILLED),
    (RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed."), KILLED),
    (FloatingPointError("loss is nan"), DIVERGED),
    (DataError("no images", file="/data"), DATA),
    (FileNotFoundError("/data/train"), DATA),
    (ModelConfigError("unknown axis", key="model.window"), CONFIG),
    (SpecError("bad"), CONFIG),
    (ValueError("boom"), CODE),
    (TypeError("unsupported operand"), CODE),
    (RayTaskError(ValueError("inner")), CODE),
    (RayTaskError(OutOfMemoryError("inner")), OOM),
])
def test_classify_exception(exc, kind):
    failure = classify_exception(exc)
    assert failure.kind == kind
    assert failure.deterministic == (kind not in (OOM, KILLED))


def test_wrapped_error_keeps_the_original_type_and_message():
    failure = classify_exception(RayTaskError(KeyError("missing")))
    assert (failure.type, failure.first_line) == ("KeyError", "KeyError: 'missing'")


def test_exception_chain_is_unwrapped_through_cause():
    try:
        try:
            raise MemoryError("cannot allocate")
        except MemoryError as inner:
            raise RuntimeError("training failed") from inner
    except RuntimeError as outer:
        assert classify_exception(outer).kind == OOM


def test_classify_record_prefers_a_stored_kind_and_falls_back_to_names():
    assert classify_record({"type": "ValueError", "message": "x", "kind": DATA}).kind == DATA
    # a kind this module does not know (train_trial's own "error") is re-derived
    assert classify_record({"type": "ValueError", "message": "x", "kind": "error"}).kind == CODE
    assert classify_record({"type": "torch.OutOfMemoryError", "message": "x"}).kind == OOM
    tb = "Traceback...\nRuntimeError: CUDA out of memory"
    assert classify_record({"type": "RuntimeError", "message": "", "traceback": tb}).kind == OOM
    assert classify_record({}).kind == CODE


def test_first_line_is_type_and_first_message_line():
    assert Failure(CODE, "ValueError", "boom\nmore detail").first_line == "ValueError: boom"
    assert Failure(CODE, "ValueError", "").first_line == "ValueError"


def test_group_by_first_line_most_frequent_first():
    f = {"a": Failure(CODE, "ValueError", "boom\n1"), "b": Failure(OOM, "MemoryError", "x"),
         "c": Failure(CODE, "ValueError", "boom\n2")}
    assert group_by_first_line(f) == [("ValueError: boom", ["a", "c"]), ("MemoryError: x", ["b"])]
