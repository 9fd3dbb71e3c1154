"""Builds instructor links: a `Preset` as query parameters and a share link, from the screen.

`preset_for` turns the current screen (model, data, freeze plan, LoRA adapters, settings with
per-layer learning rates) into a `Preset`, `preset_query` into query parameters (the inverse
of `parse_query`) and `preset_link` into a link; `plan_steps` writes a freeze plan in the
compact form the `frozen` parameter carries.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from models.applications import APPLICATION_ENTRIES
from models.datasets import BUNDLED_DATASETS
from models.export import freeze_statements
from models.export.lora_code import lora_adapters
from models.layer_rates import LayerRates
from models.lora import LoraSetting
from models.presets.parsing import parse_query
from models.presets.preset import HIDEABLE_CONTROLS, MAX_PATHS, PARAMETERS, Preset
from models.template import (
    IMAGENET_WEIGHTS,
    RANDOM_WEIGHTS,
    ModelKind,
    parse_model_key,
)
from models.training import TrainingConfig
from models.tree import LayerTree


def _format_float(value: float) -> str:
    return repr(float(value))


def _format_whole(value: int) -> str:
    """A whole number as a link writes it."""
    return str(int(value))


def _format_weights(pretrained: bool) -> str:
    """The `weights` value of a link: "imagenet" or "random"."""
    return IMAGENET_WEIGHTS if pretrained else RANDOM_WEIGHTS


def _text_of(value: Any, to_text: Callable[[Any], str]) -> str | None:
    """`to_text(value)`, or None when the preset does not set the value."""
    return None if value is None else to_text(value)


def _model_parameters(preset: Preset) -> dict[str, str | None]:
    """The model and data part of a link: model, size, weights and data."""
    return {
        "model": preset.model,
        "size": _text_of(preset.input_size, _format_whole),
        "weights": _text_of(preset.pretrained, _format_weights),
        "data": preset.dataset,
    }


def _plan_parameters(preset: Preset) -> dict[str, str | None]:
    """The freeze plan part of a link: the named plan, or the explicit steps that replace it."""
    if preset.freeze_steps is None:
        return {"freeze": preset.freeze}
    if any("," in step for step in preset.freeze_steps):
        raise ValueError(
            "A layer path of the plan contains a comma, which the 'frozen' parameter "
            "cannot carry; use a named plan (freeze=...) for this model."
        )
    return {"frozen": ",".join(preset.freeze_steps)}


def _check_link_paths(what: str, parameter: str, paths: list[str]) -> None:
    """Refuses paths a link cannot carry: commas (the list separator), too many."""
    if any("," in path for path in paths):
        raise ValueError(
            f"A layer path of the {what} contains a comma, which the '{parameter}' parameter "
            "cannot carry."
        )
    if len(paths) > MAX_PATHS:
        raise ValueError(
            f"The {what} names {len(paths)} layers; a link carries at most {MAX_PATHS}."
        )


def _lora_text(target: str, setting: LoraSetting) -> str:
    """One `lora` item: "<target>:<rank>", with ":<alpha>" when the setting gives one."""
    text = f"{target}:{setting.rank}"
    return text if setting.alpha is None else f"{text}:{_format_float(setting.alpha)}"


def _lora_parameters(preset: Preset) -> dict[str, str | None]:
    """The LoRA part of a link: the `lora` items, in order."""
    if preset.lora is None:
        return {"lora": None}
    _check_link_paths("LoRA adapters", "lora", [target for target, _ in preset.lora])
    return {"lora": ",".join(_lora_text(target, setting) for target, setting in preset.lora)}


def _rates_parameters(preset: Preset) -> dict[str, str | None]:
    """The per-layer learning rates part of a link: rates, decay, decay_block, decay_base."""
    rates = preset.layer_rates
    if rates is None or rates == LayerRates():  # the app's default: nothing to carry
        return {}
    _check_link_paths("per-layer learning rates", "rates", [path for path, _ in rates.multipliers])
    items = [f"{path}:{_format_float(multiplier)}" for path, multiplier in rates.multipliers]
    return {
        "rates": ",".join(items) if items else None,
        "decay": _text_of(rates.decay_factor, _format_float),
        "decay_block": None if rates.layers_per_block == 1 else str(rates.layers_per_block),
        "decay_base": rates.base_path,
    }


def _setting_parameters(preset: Preset) -> dict[str, str | None]:
    """The training settings part of a link: epochs, lr, batch, opt and val."""
    return {
        "epochs": _text_of(preset.epochs, _format_whole),
        "lr": _text_of(preset.learning_rate, _format_float),
        "batch": _text_of(preset.batch_size, _format_whole),
        "opt": preset.optimizer,
        "val": _text_of(preset.validation_fraction, _format_float),
    }


def _room_parameters(preset: Preset) -> dict[str, str | None]:
    """The room part of a link: hidden controls (in documented order), title and message."""
    hidden = [control for control in HIDEABLE_CONTROLS if control in preset.hidden]
    return {
        "hide": ",".join(hidden) if preset.hidden else None,
        "title": preset.title or None,
        "msg": preset.message or None,
    }


def preset_query(preset: Preset) -> dict[str, str]:
    """The query parameters of a preset (the inverse of `parse_query`), for a share link.

    Only the fields the preset sets are written, in the documented order (`PARAMETERS`).

    Args:
        preset: The preset.

    Returns:
        `{name: value}`; `parse_query(preset_query(p))` gives back `p` and no notices (per-layer
        rates equal to `LayerRates()`, which change nothing, are left out).

    Raises:
        ValueError: When a layer path of the plan, the LoRA adapters or the rates contains a
            comma, or they name more layers than a link carries (`MAX_PATHS`).

    Example:
    >>> preset_query(Preset(model="resnet50", input_size=64, hidden=frozenset({"model"})))
    {'model': 'resnet50', 'size': '64', 'hide': 'model'}
    """
    if not isinstance(preset, Preset):
        raise TypeError(f"preset_query expects a Preset; received {type(preset).__name__}.")
    parameters = {
        **_model_parameters(preset),
        **_plan_parameters(preset),
        **_lora_parameters(preset),
        **_setting_parameters(preset),
        **_rates_parameters(preset),
        **_room_parameters(preset),
    }
    return {name: text for name, text in parameters.items() if text is not None}


def preset_link(preset: Preset, base_url: str = "") -> str:
    """A share link: `base_url` + "?" + the preset's encoded query parameters.

    Example:
    >>> preset_link(Preset(dataset="shapes", epochs=2), "http://host:8501/")
    'http://host:8501/?data=shapes&epochs=2'
    """
    query = urllib.parse.urlencode(preset_query(preset), safe="/,:")
    return f"{base_url}?{query}" if query else base_url


def plan_steps(tree: LayerTree, frozen_paths: Iterable[str]) -> tuple[str, ...]:
    """A freeze plan as the fewest top-down steps, the compact form the `frozen` link uses.

    Args:
        tree: The model's `LayerTree`.
        frozen_paths: The plan (paths whose flag is False), e.g. `tree.frozen_paths()`.

    Returns:
        Steps: "path" freezes a layer and all inside it, "!path" makes them trainable again.

    Example:
    >>> plan_steps(workspace.tree, workspace.tree.frozen_paths())
    ('transfer_model/feature_extractor',)
    """
    return tuple(
        path if not trainable else f"!{path}"
        for path, trainable in freeze_statements(tree, frozen_paths)
    )


def _screen_model(template_key: str, dataset_key: str, notices: list[str]) -> dict[str, str]:
    """The model and data parameters of the current screen, where a link can carry them."""
    query: dict[str, str] = {}
    try:
        key = parse_model_key(template_key)
    except ValueError:  # not a key FreezeLab makes: a link cannot carry it either
        key = None
    if key is not None and key.kind is ModelKind.BUNDLED:
        query["model"] = key.catalogue_key
    elif (
        key is not None
        and key.kind is ModelKind.APPLICATION
        and key.catalogue_key in APPLICATION_ENTRIES
    ):
        query.update(model=key.catalogue_key, size=str(key.input_size), weights=key.weights)
    else:
        notices.append(
            f"The model {template_key!r} was uploaded or built from uploaded data, so a link "
            "cannot carry it; the link keeps the app's default model."
        )
    if dataset_key in BUNDLED_DATASETS:
        query["data"] = dataset_key
    else:
        notices.append(
            f"The dataset {dataset_key!r} is not bundled, so a link cannot carry it; learners "
            "start on the default dataset."
        )
    return query


def _screen_plan(tree: LayerTree | None, freeze: str | None, notices: list[str]) -> dict[str, str]:
    """The freeze plan parameter of the current screen: named, or the tree's own steps."""
    if freeze is not None:
        return {"freeze": freeze}
    if tree is None:
        return {}
    steps = plan_steps(tree, tree.frozen_paths())
    if not steps:
        return {"freeze": "none"}
    if len(steps) > MAX_PATHS or any("," in step for step in steps):
        notices.append(
            f"The freeze plan takes {len(steps)} steps, more than a link carries "
            f"({MAX_PATHS}) or with commas in layer names; it was left out. Use a named "
            "plan such as freeze=up_to:<path> instead."
        )
        return {}
    return {"frozen": ",".join(steps)}


def _screen_extras(
    tree: LayerTree | None, config: TrainingConfig | None, extra: Preset, notices: list[str]
) -> dict[str, str]:
    """The LoRA adapters of the tree's model and the settings, where a link can carry them."""
    if tree is not None:
        adapters = tuple(lora_adapters(tree).items())
        try:
            extra = replace(extra, lora=adapters or None)
            _lora_parameters(extra)
        except ValueError as error:
            notices.append(f"The LoRA adapters were left out of the link: {error}")
            extra = replace(extra, lora=None)
    if config is not None:
        extra = replace(
            extra,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            optimizer=config.optimizer,
            validation_fraction=config.validation_fraction,
            layer_rates=config.layer_rates,
        )
        try:
            _rates_parameters(extra)
        except ValueError as error:
            notices.append(f"The per-layer learning rates were left out of the link: {error}")
            extra = replace(extra, layer_rates=None)
    return preset_query(extra)


def preset_for(
    template_key: str,
    dataset_key: str,
    *,
    tree: LayerTree | None = None,
    freeze: str | None = None,
    config: TrainingConfig | None = None,
    hidden: Iterable[str] = (),
    title: str = "",
    message: str = "",
) -> tuple[Preset, list[str]]:
    """Builds the preset of the current screen, for an instructor's "share link" button.

    Args:
        template_key: `workspace.template.key`, e.g. "mobilenet_v2_035@96:random".
        dataset_key: `workspace.dataset.name`.
        tree: `workspace.tree`, to share its current freeze plan (compact steps) and the
            LoRA adapters of its model (each layer's path, rank and alpha), or None.
        freeze: A named plan instead, e.g. "base" or "up_to:<path>".
        config: The training settings to share, per-layer learning rates included, or None.
        hidden: Controls to hide.
        title: Heading for the room.
        message: Message for the room.

    Returns:
        `(preset, notices)`: what a link cannot carry (an uploaded model or dataset, a plan,
        adapters or rates of more than `MAX_PATHS` layers or with commas in layer paths) is
        left out with a notice.

    Example:
    >>> preset, notices = preset_for(workspace.template.key, workspace.dataset.name,
    ...                              tree=workspace.tree, config=TrainingConfig())
    >>> link = preset_link(preset, "http://workshop:8501/")
    """
    notices: list[str] = []
    query = _screen_model(template_key, dataset_key, notices)
    query.update(_screen_plan(tree, freeze, notices))
    extra = Preset(hidden=frozenset(hidden), title=title, message=message)
    query.update(_screen_extras(tree, config, extra, notices))
    query = {name: query[name] for name in PARAMETERS if name in query}  # documented order
    preset, parse_notices = parse_query(query)
    return preset, notices + parse_notices


__all__ = ["plan_steps", "preset_for", "preset_link", "preset_query"]
