"""Failure messages: turning an exception raised while training into the sentence users see.

`describe_training_error` names the exception's class and its real reason, unwrapped from
Keras's and TensorFlow's wrappers by `error_reason`, and adds a hint only where the reason says
what went wrong (a shape that does not fit, a layer name TensorFlow refuses, a label outside the
classes, memory running out). A `TrainingJob` that fails reports this sentence as its message.
"""

from __future__ import annotations

import re

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_GRAPH_LOCATION = re.compile(r"\s*\[\[\{\{node [^\n]*?\}\}\]\]|\s*\[Op:[^\]]*\]")
_MAX_REASON_LENGTH = 400
# Errors that really say a tensor's shape does not fit (measured with Keras 3.15 / TF 2.21):
# Keras's input checks ('Input 0 of layer "first" is incompatible with the layer: expected
# axis -1 of input shape to have value 6, but received input with shape (None, 5)', 'Expected
# shape (None, 6), but input has incompatible shape (None, 6, 2)'), the losses' label checks
# ('Argument `output` must have rank (ndim) `target.ndim - 1`', 'Arguments `target` and
# `output` must have the same shape') and TensorFlow's kernels ('Incompatible shapes: [4,3]
# vs. [4,2]', 'Matrix size-incompatible', 'Dimensions must be equal'). Any other text that
# merely mentions a shape (Keras lists every argument's shape under "Arguments received by")
# is not one.
_SHAPE_MISMATCH = re.compile(
    r"is incompatible with the layer"
    r"|input has incompatible shape"
    r"|incompatible shapes"
    r"|shapes \S.* (?:are|is) incompatible"
    r"|matrix size-incompatible"
    r"|dimensions must be equal",
    re.IGNORECASE,
)
_LABEL_SHAPE_MISMATCH = re.compile(
    r"must have rank \(ndim\) `target\.ndim"
    r"|`target` and `output` must have the same shape"
    r"|logits and labels must have the same first dimension",
    re.IGNORECASE,
)
_INVALID_NAME = re.compile(
    r"is not a valid (?:root )?scope name|name contains invalid characters", re.IGNORECASE
)
_LABEL_OUT_OF_RANGE = re.compile(r"label value of .* outside the valid range", re.IGNORECASE)


def error_reason(error: BaseException) -> str:
    """The sentence of an exception that says what went wrong, on one line.

    Keras wraps an error raised inside a layer as "Exception encountered when calling X.call().",
    the reason, then "Arguments received by X.call(): ..."; TensorFlow's graph errors put a
    traceback first and the reason last, followed by the node ("[[{{node ...}}]]"). Both are
    unwrapped; any other message is used whole.

    Args:
        error: Any exception.

    Returns:
        Its reason on one line, without colour codes, cut at 400 characters ("..." then).

    Example:
    >>> error_reason(ValueError("Exception encountered when calling Dense.call().\\n\\nBad."))
    'Bad.'
    """
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    for _ in range(3):  # a wrapped error may itself be wrapped
        if not text.startswith("Exception encountered when calling"):
            break
        _, _, body = text.partition("\n")
        body = body.split("Arguments received by", 1)[0].strip()
        if not body:
            break
        text = body
    if text.startswith("Graph execution error"):
        text = _GRAPH_LOCATION.sub("", text).strip().split("\n\n")[-1]
    reason = " ".join(text.split())
    if len(reason) > _MAX_REASON_LENGTH:
        reason = reason[:_MAX_REASON_LENGTH] + "..."
    return reason


def describe_training_error(error: Exception) -> str:
    """Turns an exception raised inside `fit` into one actionable sentence.

    The sentence names the exception's class and its real reason (unwrapped from Keras's and
    TensorFlow's wrappers, see `error_reason`). A hint is added only where the reason says
    what it is: a shape that does not fit, a layer name TensorFlow refuses, a label outside
    the classes, or memory running out. Text that merely mentions a shape is not a shape
    mismatch.

    Args:
        error: The exception `fit` raised.

    Returns:
        "Training stopped with an error (<class>): <reason>[ <hint>]".

    Example:
    >>> describe_training_error(RuntimeError("Cast string to float is not supported"))
    'Training stopped with an error (RuntimeError): Cast string to float is not supported.'
    """
    reason = error_reason(error) or "(no message)"
    if reason[-1] not in ".!?":
        reason += "."
    kind = type(error).__name__
    hint = ""
    if _INVALID_NAME.search(reason):
        hint = (
            " TensorFlow trains only layers whose names use letters, digits, '_', '.' and '-' "
            "(and start with a letter or digit): rename the layer, or load the model through "
            "FreezeLab's upload, which renames such layers internally."
        )
    elif _LABEL_SHAPE_MISMATCH.search(reason):
        hint = " The labels do not fit the model's output: give one class number per sample."
    elif _SHAPE_MISMATCH.search(reason):
        hint = " The data's shape does not fit the model: check the input size and channels."
    elif _LABEL_OUT_OF_RANGE.search(reason):
        hint = " Labels must be class numbers from 0 to the number of classes - 1."
    elif isinstance(error, MemoryError) or re.search(
        r"out of memory|\boom\b|resource ?exhausted", f"{kind} {reason}", re.IGNORECASE
    ):
        hint = " Try a smaller batch size or a smaller model."
    return f"Training stopped with an error ({kind}): {reason}{hint}"
