"""The named freeze plans: one vocabulary for the bulk buttons, instructor links and schedules.

A `FreezePlan` is a kind and, for two kinds, an argument. It has two spellings:

| kind         | link text            | action name             | LayerTree call            |
|--------------|----------------------|-------------------------|---------------------------|
| "none"       | "none"               | "unfreeze_all"          | `unfreeze_all()`          |
| "all"        | "all"                | "freeze_all"            | `freeze_all()`            |
| "base"       | "base"               | "freeze_base"           | `set_frozen(base, True)`  |
| "batch_norm" | "batch_norm"         | "freeze_batch_norm"     | `freeze_batch_norm()`     |
| "up_to"      | "up_to:<layer path>" | "freeze_up_to", path    | `freeze_up_to(path)`      |
| "top"        | "top:<n>"            | "unfreeze_top", n       | `unfreeze_top(n, base)`   |
| "keep"       | "keep"               | "keep"                  | nothing (a schedule phase |
|              |                      |                         | keeps the current plan)   |

`parse` / `text` read and write the link text, `from_action` / `action` the action name, and
`apply(tree, base_path)` makes the LayerTree call, so `Workspace.bulk_action`,
`Preset.freeze_plan` and `models.schedule.Phase` all mean the same thing by the same word.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from models.limits import TOP_LAYERS_RANGE
from models.tree import LayerTree
from models.validation import ArgumentTypeError, check_choice, check_whole_number


class PlanKind(enum.StrEnum):
    """What a named freeze plan does (its value is the link's word)."""

    NONE = "none"
    ALL = "all"
    BASE = "base"
    BATCH_NORM = "batch_norm"
    UP_TO = "up_to"
    TOP = "top"
    KEEP = "keep"


ACTION_KINDS: dict[str, PlanKind] = {
    "freeze_all": PlanKind.ALL,
    "unfreeze_all": PlanKind.NONE,
    "freeze_base": PlanKind.BASE,
    "freeze_up_to": PlanKind.UP_TO,
    "unfreeze_top": PlanKind.TOP,
    "freeze_batch_norm": PlanKind.BATCH_NORM,
    "keep": PlanKind.KEEP,
}
"""Action name (the bulk buttons', the schedules') -> kind."""

BULK_ACTIONS: tuple[str, ...] = tuple(name for name in ACTION_KINDS if name != "keep")
"""The action names of the bulk freezing buttons (`Workspace.bulk_action`)."""

NAMED_PLANS: tuple[str, ...] = ("none", "base", "all", "batch_norm")
"""Link words of the plans without an argument."""

PLAN_PREFIXES: tuple[str, ...] = ("up_to:", "top:")
"""Link prefixes of the plans with an argument."""

_ACTION_OF_KIND = {kind: action for action, kind in ACTION_KINDS.items()}
_LINK_FORMS = (
    f"one of {list(NAMED_PLANS)}, 'up_to:<layer path>' (e.g. "
    f"up_to:transfer_model/feature_extractor/conv2) or 'top:<n>' with n from "
    f"{TOP_LAYERS_RANGE[0]} to {TOP_LAYERS_RANGE[1]}"
)


@dataclass(frozen=True)
class FreezePlan:
    """A named freeze plan: "freeze the base", "unfreeze the top 3 layers", ...

    Attributes:
        kind: A `PlanKind` (its link word, e.g. "base", is accepted too).
        argument: The layer path for `UP_TO`, the number of layers for `TOP`, else None.

    Example:
    >>> plan = FreezePlan.parse("top:3")
    >>> plan.action, plan.argument
    ('unfreeze_top', 3)
    >>> plan.apply(workspace.tree, workspace.base_path)
    """

    kind: PlanKind
    argument: str | int | None = None

    def __post_init__(self) -> None:
        kinds = [kind.value for kind in PlanKind]
        kind = PlanKind(check_choice("freeze plan kind", self.kind, kinds))
        object.__setattr__(self, "kind", kind)
        argument = self.argument
        if kind is PlanKind.UP_TO:
            if not isinstance(argument, str):
                raise ArgumentTypeError(
                    "The plan 'up_to' needs the path of the last layer to freeze. Received: "
                    f"argument={argument!r}"
                )
            if not argument.strip():
                raise ValueError(
                    "The plan 'up_to' needs the path of the last layer to freeze, e.g. "
                    f"'transfer_model/feature_extractor'. Received: argument={argument!r}"
                )
        elif kind is PlanKind.TOP:
            number = check_whole_number(
                "argument",
                argument,
                *TOP_LAYERS_RANGE,
                hint="The plan 'top' needs how many of the base's top layers with weights train.",
            )
            object.__setattr__(self, "argument", number)
        elif argument is not None:
            raise ValueError(
                f"The plan {kind.value!r} takes no argument; expected argument=None. "
                f"Received: argument={argument!r}"
            )

    # ------------------------------------------------------------------------ spellings
    @classmethod
    def parse(cls, text: str) -> FreezePlan:
        """Reads a plan from its link text: "none", "base", "up_to:<path>", "top:<n>", ...

        Spaces around the text and around the argument are ignored.

        Args:
            text: The text, e.g. an instructor link's `freeze` parameter.

        Returns:
            The `FreezePlan`.

        Raises:
            ValueError: For any other text (a `TypeError` too when it is not a string).

        Example:
        >>> FreezePlan.parse("up_to: transfer_model/feature_extractor").argument
        'transfer_model/feature_extractor'
        """
        if not isinstance(text, str):
            raise ArgumentTypeError(f"A freeze plan must be {_LINK_FORMS}. Received: plan={text!r}")
        value = text.strip()
        if value in NAMED_PLANS or value == PlanKind.KEEP:
            return cls(PlanKind(value))
        if value.startswith("up_to:"):
            path = value.removeprefix("up_to:").strip()
            if path:
                return cls(PlanKind.UP_TO, path)
        elif value.startswith("top:"):
            count = value.removeprefix("top:").strip()
            digits = count.isascii() and count.isdigit() and len(count) <= 9
            if digits and int(count) <= TOP_LAYERS_RANGE[1]:
                return cls(PlanKind.TOP, int(count))
        raise ValueError(f"A freeze plan must be {_LINK_FORMS}. Received: plan={text!r}")

    @classmethod
    def from_action(cls, action: str, argument: Any = None) -> FreezePlan:
        """The plan of an action name: a bulk button's or a schedule phase's.

        Args:
            action: One of `ACTION_KINDS`: "freeze_all", "unfreeze_all", "freeze_base",
                "freeze_up_to" (argument: path), "unfreeze_top" (argument: how many of the
                base's top layers with weights train), "freeze_batch_norm" or "keep".
            argument: The action's argument, when it takes one (ignored otherwise).

        Returns:
            The `FreezePlan`.

        Raises:
            ValueError: For an unknown action or a bad argument.

        Example:
        >>> FreezePlan.from_action("unfreeze_top", 2).text
        'top:2'
        """
        kind = ACTION_KINDS[check_choice("bulk action", action, list(ACTION_KINDS))]
        return cls(kind, argument if kind in (PlanKind.UP_TO, PlanKind.TOP) else None)

    @property
    def text(self) -> str:
        """The link text, e.g. "base", "up_to:<path>" or "top:3"; `parse` reads it back."""
        if self.argument is None:
            return self.kind.value
        return f"{self.kind.value}:{self.argument}"

    @property
    def action(self) -> str:
        """The action name, e.g. "freeze_base" (see `ACTION_KINDS`)."""
        return _ACTION_OF_KIND[self.kind]

    def __str__(self) -> str:
        return self.text

    # ------------------------------------------------------------------------ applying
    def apply(self, tree: LayerTree, base_path: str | None = None) -> None:
        """Sets the plan on a model through its `LayerTree`.

        Args:
            tree: The model's `LayerTree`.
            base_path: The base model's path, for "base" and "top"; None for
                `tree.default_base_path()`.

        Raises:
            ValueError: When a path (the base's, "up_to"'s) is not in the model.

        Example:
        >>> FreezePlan(PlanKind.BASE).apply(workspace.tree, workspace.base_path)
        """
        kind = self.kind
        if kind is PlanKind.KEEP:
            return
        if kind is PlanKind.ALL:
            tree.freeze_all()
        elif kind is PlanKind.NONE:
            tree.unfreeze_all()
        elif kind is PlanKind.BATCH_NORM:
            tree.freeze_batch_norm()
        elif kind is PlanKind.UP_TO:
            tree.freeze_up_to(str(self.argument))
        else:
            base = base_path if base_path is not None else tree.default_base_path()
            if kind is PlanKind.BASE:
                tree.set_frozen(base, True)
            else:
                tree.unfreeze_top(int(self.argument or 0), base)


__all__ = [
    "ACTION_KINDS",
    "BULK_ACTIONS",
    "NAMED_PLANS",
    "PLAN_PREFIXES",
    "FreezePlan",
    "PlanKind",
]
