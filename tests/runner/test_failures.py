"""Failure classification: which errors are retried, which are recorded and left alone."""

from __future__ import annotations

import pytest

from ablate.errors import DataError, ModelConfigError, SpecError
from ablate.failures import (
    CODE,
    CONFIG,
    DATA,
    DISK,
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


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as e:
        return e


def test_a_vanished_dataloader_worker_is_killed_not_code():
    import queue

    # torch's own chain when a loader process is killed while the trial runs in a thread:
    # the RuntimeError that names the worker, raised from an empty queue.Empty
    exc = _raised_from(RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly"),
                       queue.Empty())
    failure = classify_exception(RayTaskError(exc))
    assert (failure.kind, failure.deterministic) == (KILLED, False)
    assert failure.first_line == "RuntimeError: DataLoader worker (pid(s) 4242) exited unexpectedly"
    # and the record the trainable stores of it classifies the same
    assert classify_record({"type": "RuntimeError", "message": str(exc)}).kind == KILLED


@pytest.mark.parametrize("exc", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:859] . PytorchStreamWriter failed "
                 "writing file data/3: file write failed"),
    RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1024 vs 998"),
    _raised_from(RuntimeError("checkpoint failed"), OSError(28, "No space left on device")),
])
def test_a_full_disk_is_its_own_kind_not_retried_with_a_hint(exc):
    failure = classify_exception(exc)
    assert failure.kind == DISK and failure.deterministic
    assert "free space" in failure.hint and "resume" in failure.hint
    if exc.__cause__ is None:  # a record keeps only the outer message: it must say it
        assert classify_record({"type": type(exc).__name__, "message": str(exc)}).kind == DISK
    assert classify_exception(ValueError("x")).hint is None


def test_a_wrappers_message_does_not_decide_the_kind():
    # Ray's wrapper repeats the inner traceback, where a source line may read "out of memory"
    wrapper = RayTaskError(ValueError("bad value"))
    wrapper.args = ("Traceback: ... raise ValueError  # not out of memory ...",)
    assert classify_exception(wrapper).kind == CODE


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
