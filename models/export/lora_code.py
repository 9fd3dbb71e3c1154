"""The script's LoRA adapters: Keras's own `enable_lora` on the same layers, after the plan.

Measured with Keras 3.15.1 on TensorFlow and JAX (tests/test_export_lora.py):

- `enable_lora` makes the layer's kernel non-trainable and adds two adapter matrices; Keras
  adds every new variable of a layer whose flag is False as non-trainable, so on a frozen
  layer the adapters are frozen too, as FreezeLab has them.
- A `trainable = True` written afterwards on the layer or on a parent (the freeze plan
  re-enabling a child inside a frozen parent) makes the kernel trainable again.

So the script applies the freeze plan first and enables LoRA after it: its counts and every
variable's flag then equal FreezeLab's, with no statement on a Keras internal.
"""

from __future__ import annotations

from models.export.plan_code import address, statement_lines
from models.export.source import number
from models.lora import LoraSetting, is_lora, lora_setting
from models.tree import LayerTree


def lora_adapters(tree: LayerTree) -> dict[str, LoraSetting]:
    """The LoRA adapters of a model: layer path -> `LoraSetting`, in model order.

    Args:
        tree: The model's `LayerTree`.

    Returns:
        One entry per layer with an adapter (a layer with two parents under its first path);
        empty when the model has none.

    Example:
    >>> lora_adapters(workspace.tree) == workspace.lora_plan()
    True
    """
    return {
        path: lora_setting(tree.layer(path)) for path in tree.paths() if is_lora(tree.layer(path))
    }


def lora_lines(tree: LayerTree, base_path: str) -> list[str]:
    """The script's `enable_lora` statements for the model's adapters (none: no lines).

    Args:
        tree: The model's `LayerTree`; its LoRA layers get the statements.
        base_path: The path of the nested base, which the script calls `base`.

    Returns:
        Source lines, comments first; to be placed after the freeze plan's statements.

    Example:
    >>> lora_lines(tree, "transfer_model/feature_extractor")[-1]
    'base.get_layer("conv1").enable_lora(4, lora_alpha=4.0)'
    """
    adapters = lora_adapters(tree)
    if not adapters:
        return []
    lines = [
        f"# LoRA: {len(adapters)} adapter(s) with Keras's own enable_lora, AFTER the freeze plan.",
        "# enable_lora freezes the kernel and adds two trainable matrices (frozen too in a frozen",
        "# layer); a later `trainable = True` on the layer or a parent would unfreeze the kernel.",
    ]
    rows = [
        (
            address(tree, path, base_path),
            f".enable_lora({setting.rank}, lora_alpha={number(setting.effective_alpha)})",
            "",
        )
        for path, setting in adapters.items()
    ]
    return lines + statement_lines(rows)


__all__ = ["lora_adapters", "lora_lines"]
