"""Tests for models.limits and models.validation: one set of bounds, one wording of checks."""

import math

import numpy as np
import pytest

from models import limits
from models.limits import (
    BATCH_SIZE_RANGE,
    EPOCHS_RANGE,
    LAYERS_PER_STEP_RANGE,
    LEARNING_RATE_RANGE,
    TOP_LAYERS_RANGE,
    UNFREEZE_STEPS_RANGE,
    VALIDATION_FRACTION_RANGE,
)
from models.presets import parse_query, preset_for
from models.schedule import gradual_schedule, two_phase_schedule
from models.training import TrainingConfig
from models.validation import (
    ArgumentTypeError,
    check_choice,
    check_number,
    check_whole_number,
    number_phrase,
    whole_number_phrase,
)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_whole_numbers_of_any_integer_type_come_back_as_int(value):
    result = check_whole_number("epochs", value, 1, 200)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value", [0.5, 3.0, "3", True, None, [3]])
def test_other_kinds_are_a_type_error_and_a_value_error(value):
    with pytest.raises(ArgumentTypeError) as raised:
        check_whole_number("epochs", value, 1, 200)
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, ValueError)
    assert str(raised.value) == (
        f"`epochs` must be a whole number from 1 to 200. Received: epochs={value!r}"
    )


@pytest.mark.parametrize(
    ("low", "high", "value", "expected"),
    [
        (1, 200, 0, "a whole number from 1 to 200"),
        (1, 200, 201, "a whole number from 1 to 200"),
        (0, None, -1, "a whole number >= 0"),
        (None, 5, 6, "a whole number <= 5"),
    ],
)
def test_out_of_range_is_a_value_error_naming_the_range(low, high, value, expected):
    with pytest.raises(ValueError) as raised:
        check_whole_number("num_layers", value, low, high)
    assert not isinstance(raised.value, TypeError)
    assert str(raised.value) == f"`num_layers` must be {expected}. Received: num_layers={value}"


def test_none_hints_and_bounds_are_accepted():
    assert check_whole_number("every", None, 1, allow_none=True) is None
    assert check_whole_number("n", 1, 1, 1) == 1 and check_whole_number("n", -9) == -9
    with pytest.raises(ValueError) as raised:
        check_whole_number("every", 0, 1, allow_none=True, hint="Use None for epoch ends.")
    assert str(raised.value) == (
        "`every` must be None or a whole number >= 1. Received: every=0. Use None for epoch ends."
    )


@pytest.mark.parametrize("value", [0.5, np.float32(0.5), 1, np.int64(1)])
def test_numbers_of_any_real_type_come_back_as_float(value):
    result = check_number("learning_rate", value, 1e-6, 10.0)
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, 11.0])
def test_numbers_outside_or_not_finite_are_refused(value):
    with pytest.raises(ValueError) as raised:
        check_number("learning_rate", value, 1e-6, 10.0)
    assert "`learning_rate` must be a number from 1e-06 to 10. Received: learning_rate=" in str(
        raised.value
    )


@pytest.mark.parametrize("value", ["0.1", True, None, 1j])
def test_non_numbers_are_a_type_error(value):
    with pytest.raises(TypeError, match="must be a number"):
        check_number("lr", value)


def test_choices_and_phrases():
    assert check_choice("optimizer", "sgd", ["adam", "sgd"]) == "sgd"
    with pytest.raises(ValueError) as raised:
        check_choice("optimizer", "lion", ["adam", "sgd"])
    assert str(raised.value) == "Unknown optimizer 'lion'. Expected one of ['adam', 'sgd']."
    assert whole_number_phrase() == "a whole number"
    assert number_phrase(0.0, 0.9) == "a number from 0 to 0.9"


# ------------------------------------------------------------------------------ limits
def just_outside(low, high):
    if isinstance(low, int):
        return low - 1, high + 1
    return low / 2 if low > 0 else -0.01, high * 1.01


SETTINGS = [
    ("epochs", "epochs", EPOCHS_RANGE),
    ("batch_size", "batch", BATCH_SIZE_RANGE),
    ("learning_rate", "lr", LEARNING_RATE_RANGE),
    ("validation_fraction", "val", VALIDATION_FRACTION_RANGE),
]


@pytest.mark.parametrize(("field", "parameter", "bounds"), SETTINGS)
def test_training_config_and_links_accept_the_same_values(field, parameter, bounds):
    low, high = bounds
    for value in (low, high):
        assert getattr(TrainingConfig(**{field: value}), field) == value
        preset, notices = parse_query({parameter: str(value)})
        assert notices == [] and getattr(preset, field) == value
    for value in just_outside(low, high):
        with pytest.raises(ValueError, match=field):
            TrainingConfig(**{field: value})
        preset, notices = parse_query({parameter: str(value)})
        assert getattr(preset, field) is None and len(notices) == 1
        assert f"from {low:g} to {high:g}" in notices[0]


def test_a_share_link_carries_the_settings_of_any_run():
    config = TrainingConfig(
        epochs=EPOCHS_RANGE[1],
        batch_size=BATCH_SIZE_RANGE[1],
        learning_rate=LEARNING_RATE_RANGE[1],
        validation_fraction=VALIDATION_FRACTION_RANGE[1],
    )
    preset, notices = preset_for("bundled_digits_cnn", "digits_5_9", config=config)
    assert notices == [] and preset.training_config() == config


def test_top_layers_bound_the_links_and_the_gradual_schedule():
    preset, notices = parse_query({"freeze": f"top:{TOP_LAYERS_RANGE[1]}"})
    assert notices == [] and preset.freeze_action() == ("unfreeze_top", TOP_LAYERS_RANGE[1])
    _, notices = parse_query({"freeze": f"top:{TOP_LAYERS_RANGE[1] + 1}"})
    assert f"from 0 to {TOP_LAYERS_RANGE[1]}" in notices[0]
    most = gradual_schedule(1, 1e-2, UNFREEZE_STEPS_RANGE[1], LAYERS_PER_STEP_RANGE[1], 1, 1e-4)
    assert most[-1].num_layers == UNFREEZE_STEPS_RANGE[1] * LAYERS_PER_STEP_RANGE[1]
    assert most[-1].num_layers <= TOP_LAYERS_RANGE[1]
    for name, steps, block in (
        ("num_steps", UNFREEZE_STEPS_RANGE[1] + 1, 1),
        ("layers_per_step", 1, LAYERS_PER_STEP_RANGE[1] + 1),
    ):
        with pytest.raises(ValueError, match=f"`{name}` must be a whole number from 1 to"):
            gradual_schedule(1, 1e-2, steps, block, 1, 1e-4)


def test_phases_take_the_training_bounds():
    phases = two_phase_schedule(EPOCHS_RANGE[1], LEARNING_RATE_RANGE[1], 1, LEARNING_RATE_RANGE[0])
    assert phases[0].epochs == EPOCHS_RANGE[1]
    with pytest.raises(ValueError, match="`epochs` must be a whole number from 1 to"):
        two_phase_schedule(EPOCHS_RANGE[1] + 1, 1e-2, 1, 1e-4)
    with pytest.raises(TypeError, match=r"Received: epochs=1\.5"):
        two_phase_schedule(1.5, 1e-2, 1, 1e-4)


def test_every_range_is_ordered_and_named_in_all():
    ranges = {name: getattr(limits, name) for name in limits.__all__ if name.endswith("_RANGE")}
    assert ranges and all(low <= high for low, high in ranges.values())
    others = {name: getattr(limits, name) for name in limits.__all__ if name not in ranges}
    assert all(name.startswith("MAX_") and value > 0 for name, value in others.items())
