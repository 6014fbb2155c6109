import pytest

from ablate.errors import (
    AblateError,
    ModelConfigError,
    SpecError,
    closest,
    unknown_name_hint,
)


def test_error_renders_file_line_key_and_hint_on_one_line():
    err = SpecError("expected an integer,\n got 'x'", file="sweeps/a.yaml", line=7,
                    key="model.group_size", hint="write a whole number")
    assert str(err) == ("sweeps/a.yaml:7: model.group_size: expected an integer, got 'x'; "
                        "write a whole number")
    assert "\n" not in str(err)


def test_error_without_location_is_just_the_message():
    assert str(AblateError("nothing to do")) == "nothing to do"


def test_model_config_error_is_also_a_value_error():
    # timm and torch callers catch ValueError; ours must still be the project's own error
    with pytest.raises(ValueError):
        raise ModelConfigError("bad", key="window")


def test_closest_finds_typos_and_refuses_unrelated_names():
    assert closest("dwnett_tiny", ["dwnet_tiny", "ablate_swin_tiny"]) == "dwnet_tiny"
    assert closest("zzzz", ["dwnet_tiny", "ablate_swin_tiny"]) is None


def test_unknown_name_hint_lists_sorted_choices_and_nearest():
    hint = unknown_name_hint("slidng", ["shifted", "sliding"])
    assert hint == "did you mean 'sliding'? valid: shifted, sliding"
