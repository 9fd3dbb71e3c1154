"""The `Preset` an instructor link sets, and the link's vocabulary: parameters, controls, limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from models.layer_rates import LayerRates
from models.lora import LoraSetting
from models.plans import FreezePlan
from models.run_store import SESSION_QUERY_PARAMETER
from models.training import TrainingConfig

HIDEABLE_CONTROLS: Mapping[str, str] = {
    "model": "the model picker (catalogue, size, weights)",
    "data": "the dataset picker",
    "upload": "model and data uploads",
    "freeze": "the layer tree and the bulk freezing buttons",
    "settings": "the training settings (epochs, learning rate, batch size, optimizer)",
    "code": "'Show code' and the downloads",
}
MAX_TITLE_LENGTH = 120
MAX_MESSAGE_LENGTH = 500
MAX_PATHS = 200
MAX_PATH_LENGTH = 300
RESERVED_PARAMETERS: frozenset[str] = frozenset({SESSION_QUERY_PARAMETER})
PARAMETERS: tuple[str, ...] = (
    "model",
    "size",
    "weights",
    "data",
    "freeze",
    "frozen",
    "lora",
    "epochs",
    "lr",
    "batch",
    "opt",
    "val",
    "rates",
    "decay",
    "decay_block",
    "decay_base",
    "hide",
    "title",
    "msg",
)


@dataclass(frozen=True)
class Preset:
    """What an instructor link sets; None (or empty) means "keep the app's default".

    Attributes:
        model: Catalogue key: "bundled_digits_cnn" or a keras.applications key.
        input_size: Input size for a keras.applications model.
        pretrained: ImageNet weights (True) or random initialisation (False), applications.
        dataset: Bundled dataset key.
        freeze: Named plan: "none", "base", "all", "batch_norm", "up_to:<path>" or "top:<n>".
        freeze_steps: Explicit plan as top-down steps (`models.export.freeze_statements`):
            "path" freezes a layer and everything inside it, "!path" makes them trainable
            again; replaces `freeze`. `resolve_frozen_paths` turns it into frozen paths.
        lora: LoRA adapters as `(target, LoraSetting)` pairs, applied in order: a target is
            a layer path or a bulk recipe of `models.lora.LORA_TARGETS` ("dense",
            "attention") run on the base. `resolve_lora` turns them into the adapters of the
            model in use; None keeps the model's own (none on a new session).
        epochs: Epochs.
        learning_rate: Learning rate.
        batch_size: Batch size.
        optimizer: Optimizer key of `models.training.OPTIMIZERS`.
        validation_fraction: Share of the data held out for validation.
        layer_rates: Per-layer learning rates (`models.layer_rates.LayerRates`): layer
            multipliers and layer-wise decay; None keeps the app's (none).
        hidden: Controls to hide, from `HIDEABLE_CONTROLS`.
        title: Heading for the room (plain text: render it escaped).
        message: Message for the room (plain text: render it escaped).
    """

    model: str | None = None
    input_size: int | None = None
    pretrained: bool | None = None
    dataset: str | None = None
    freeze: str | None = None
    freeze_steps: tuple[str, ...] | None = None
    lora: tuple[tuple[str, LoraSetting], ...] | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    validation_fraction: float | None = None
    layer_rates: LayerRates | None = None
    hidden: frozenset[str] = frozenset()
    title: str = ""
    message: str = ""

    @property
    def is_empty(self) -> bool:
        """Whether the preset sets nothing (a plain link)."""
        return self == Preset()

    def hides(self, control: str) -> bool:
        """Whether a control of `HIDEABLE_CONTROLS` is hidden.

        Example:
        >>> Preset(hidden=frozenset({"model"})).hides("model")
        True
        """
        if control not in HIDEABLE_CONTROLS:
            raise ValueError(
                f"Unknown control {control!r}; expected one of {sorted(HIDEABLE_CONTROLS)}."
            )
        return control in self.hidden

    def training_config(self, defaults: TrainingConfig | None = None) -> TrainingConfig:
        """The app's training settings with the preset's values put in.

        Args:
            defaults: The settings to start from; None for `TrainingConfig()`.

        Returns:
            A `TrainingConfig`, with the preset's per-layer learning rates when it has some.

        Raises:
            ValueError: When the per-layer rates would give a layer a learning rate above
                `models.limits.LEARNING_RATE_RANGE` with the resulting learning rate
                (`parse_query` already refuses rates that do with the link's own `lr`).

        Example:
        >>> Preset(epochs=5).training_config().epochs
        5
        >>> Preset(layer_rates=LayerRates(decay_factor=0.5)).training_config().layer_rates
        LayerRates(multipliers=(), decay_factor=0.5, layers_per_block=1, base_path=None)
        """
        config = defaults or TrainingConfig()
        changes = {
            name: value
            for name, value in (
                ("epochs", self.epochs),
                ("learning_rate", self.learning_rate),
                ("batch_size", self.batch_size),
                ("optimizer", self.optimizer),
                ("validation_fraction", self.validation_fraction),
                ("layer_rates", self.layer_rates),
            )
            if value is not None
        }
        return replace(config, **changes)

    def freeze_plan(self) -> FreezePlan | None:
        """The named plan as a `FreezePlan`, or None when the preset has none.

        An explicit plan (`freeze_steps`) replaces the named one; it is applied with
        `resolve_frozen_paths` instead.

        Example:
        >>> Preset(freeze="top:3").freeze_plan().apply(workspace.tree, workspace.base_path)
        """
        if self.freeze is None or self.freeze_steps is not None:
            return None
        return FreezePlan.parse(self.freeze)

    def freeze_action(self) -> tuple[str, Any] | None:
        """The `Workspace.bulk_action(action, argument)` call for the named plan, if any.

        Returns:
            `(action, argument)`, e.g. `("freeze_base", None)`, `("freeze_up_to", path)` or
            `("unfreeze_top", 3)`; None when the preset has no named plan (see `freeze_plan`).

        Example:
        >>> Preset(freeze="top:3").freeze_action()
        ('unfreeze_top', 3)
        """
        plan = self.freeze_plan()
        return None if plan is None else (plan.action, plan.argument)


__all__ = [
    "HIDEABLE_CONTROLS",
    "MAX_MESSAGE_LENGTH",
    "MAX_PATHS",
    "MAX_PATH_LENGTH",
    "MAX_TITLE_LENGTH",
    "PARAMETERS",
    "RESERVED_PARAMETERS",
    "Preset",
]
