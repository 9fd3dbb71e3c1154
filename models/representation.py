"""Representation change: linear CKA between a base's block outputs before and after fine-tuning.

Weight drift (`models.drift`) says how far each layer's weights moved; this module says how much
each block's *features* changed, on one held-out batch of inputs (the probe batch). For each
chosen block of the base, the block's output on the probe batch is computed at the start of
training (`RepresentationProbe.capture`) and again at the end (`RepresentationProbe.compare`),
both in inference mode, and the two are compared with linear CKA (centred kernel alignment,
Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited"):

    CKA(X, Y) = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F * ||Y_c^T Y_c||_F)
              = <K_c, L_c>_F / (||K_c||_F * ||L_c||_F),  K_c = X_c X_c^T, L_c = Y_c Y_c^T

where X and Y are the outputs flattened to (examples, features) and X_c, Y_c their columns
centred. CKA is 1 for the same representation up to a rotation and an isotropic scaling, and
falls towards 0 as the features on the batch stop sharing structure. It compares what the
features *say about the examples*, so it does not care that a block's channels were permuted.

Conventions FreezeLab relies on:

- Exactly 1.0 means bitwise unchanged. `linear_cka` returns exactly 1.0 when its two arrays
  are bitwise equal, and otherwise at most the largest float below 1.0, so a frozen block (whose
  output is bitwise the same as long as every layer feeding it is frozen too) reads exactly 1.0
  and any real change, however small, reads less.
- A block's output depends on every layer before it: a frozen layer after a trained one reads
  less than 1.0 although its own weights did not move. The frame's `frozen_through` column says
  whether the block and every layer with weights that feeds it were frozen; only those blocks
  must read 1.0 (`unchanged`).
- Undefined values are NaN, never an exception in the probe: a block whose output contains NaN
  or infinity (a diverged run), or whose output is the same for every example of the batch (a
  "dead" block: CKA is 0 / 0), reads NaN unless it is bitwise unchanged.

Everything on tensors runs through Keras (one Functional sub-model, `predict_on_batch`, so it is
compiled on TensorFlow and JAX alike); the CKA itself is computed in float64 NumPy on the host,
where one batch's matrices are small.

Example:
>>> probe = RepresentationProbe(tree, x_held_out)
>>> probe.capture()            # before fit
>>> model.fit(x_train, y_train, epochs=3)
>>> probe.compare()[["block_path", "cka", "frozen"]]
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from models.names import display_name
from models.tree import LayerTree
from models.validation import check_whole_number

__all__ = [
    "DEFAULT_MAX_BLOCKS",
    "DEFAULT_MAX_EXAMPLES",
    "REPRESENTATION_COLUMNS",
    "RepresentationProbe",
    "RepresentationRecorder",
    "RepresentationReport",
    "base_inputs",
    "linear_cka",
    "representation_blocks",
]

DEFAULT_MAX_BLOCKS = 12
"""How many blocks `representation_blocks` picks at most: a chart stays readable."""

DEFAULT_MAX_EXAMPLES = 256
"""How many probe examples `RepresentationProbe` keeps at most (memory ~ blocks x n^2 floats)."""

REPRESENTATION_COLUMNS = (
    "block_path",
    "block_name",
    "class_name",
    "cka",
    "unchanged",
    "frozen",
    "frozen_through",
    "num_features",
)
"""The columns of `RepresentationProbe.compare`'s frame, in order."""

_REPRESENTATION_DTYPES = ("object", "object", "object", "float64", "bool", "bool", "bool", "int64")

NOT_MEASURED_YET = "Measured when the first epoch ends."
"""The note of a run's representation report before its first comparison."""

_BELOW_ONE = float(np.nextafter(1.0, 0.0))
"""The largest float64 below 1.0: what a changed representation reads at most."""

_CONSTANT_RTOL = 1e-10
"""A matrix whose centred norm is at most this fraction of its norm has zero variance."""

LOGGER = logging.getLogger("freezelab")

_FEATURES = "features"
_GRAM = "gram"


# ------------------------------------------------------------------------------- linear CKA
def _to_numpy(value: Any, name: str) -> np.ndarray:
    """`value` as a NumPy array (a backend tensor is copied to the host), numbers only."""
    array = value if isinstance(value, np.ndarray) else keras.ops.convert_to_numpy(value)
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype("float32")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(
            f"{name} must hold real numbers (an activation matrix); received an array of "
            f"dtype {array.dtype}."
        )
    return array


def _check_rows(name: str, array: np.ndarray) -> None:
    if array.ndim == 0:
        raise ValueError(
            f"{name} must have one row per example, shape (examples, ...); received a scalar."
        )
    if array.shape[0] < 2:
        raise ValueError(
            f"{name} must have at least 2 examples (rows) for CKA: it compares how examples "
            f"relate to each other; received shape {array.shape}."
        )
    if array.size == 0:
        raise ValueError(
            f"{name} must have at least one feature per example; received shape {array.shape}."
        )


def _same_bits(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two arrays have the same shape, dtype and bytes (NaN == NaN, -0.0 != 0.0)."""
    return (
        first.shape == second.shape
        and first.dtype == second.dtype
        and np.array_equal(
            np.ascontiguousarray(first).view(np.uint8),
            np.ascontiguousarray(second).view(np.uint8),
        )
    )


def _centred(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """The (examples, features) float64 matrix with centred columns, and whether it is constant.

    Constant means zero variance: every feature takes the same value on every example, up to
    float rounding (the centred norm is at most `_CONSTANT_RTOL` times the norm).
    """
    matrix = np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    centred_norm = float(np.linalg.norm(centred))
    constant = centred_norm == 0.0 or centred_norm <= _CONSTANT_RTOL * float(np.linalg.norm(matrix))
    return centred, constant


def _cka_features(first: np.ndarray, second: np.ndarray) -> float:
    """Linear CKA in the feature form, from two centred (n, p) and (n, q) matrices."""
    cross = float(np.linalg.norm(second.T @ first)) ** 2
    return cross / (
        float(np.linalg.norm(first.T @ first)) * float(np.linalg.norm(second.T @ second))
    )


def _cka_grams(first: np.ndarray, second: np.ndarray) -> float:
    """Linear CKA in the Gram form, from two centred (n, n) Gram matrices."""
    return float(np.vdot(first, second)) / (
        float(np.linalg.norm(first)) * float(np.linalg.norm(second))
    )


def _bounded(value: float) -> float:
    """A computed CKA clipped to [0, the largest float below 1]: only bitwise equal reads 1.0."""
    if math.isnan(value):
        return value
    return min(max(value, 0.0), _BELOW_ONE)


def linear_cka(x: Any, y: Any) -> float:
    """Computes linear CKA between two activation matrices of the same examples.

    Both inputs are flattened to (examples, features), their columns centred, and the linear
    CKA of Kornblith et al. (2019) computed in float64 NumPy, in the Gram form
    `<K_c, L_c> / (||K_c|| ||L_c||)` (n x n matrices) or the feature form
    `||Y_c^T X_c||^2 / (||X_c^T X_c|| ||Y_c^T Y_c||)`, whichever costs fewer multiplications for
    the shapes (the Gram form when the features outnumber the examples).

    Defined behaviour at the edges:
    - bitwise-equal arrays (same shape, dtype and bytes) return exactly 1.0, whatever they
      hold: the representation is the same one. Otherwise the value is clipped to
      [0, the largest float below 1.0], so 1.0 always means "bitwise unchanged";
    - a NaN or infinity in either array (when they are not bitwise equal) returns NaN;
    - zero variance (every feature constant across the examples) in either array, when they
      are not bitwise equal, raises ValueError: CKA is 0 / 0 there.

    Args:
        x: Activations of shape (examples, ...), any rank >= 1 (a 1-D array is one feature);
            a NumPy array or a backend tensor.
        y: Activations of the SAME examples in the same order, shape (examples, ...); its
            number of features may differ from `x`'s.

    Returns:
        The CKA, a float in [0, 1] (NaN for non-finite inputs).

    Raises:
        ValueError: When the numbers of rows differ, there are fewer than 2 examples, an array
            has no features, or one array has zero variance (see above).
        TypeError: When an array does not hold real numbers.

    Example:
    >>> x = np.random.default_rng(0).normal(size=(64, 10))
    >>> linear_cka(x, 3.0 * x)  # isotropic scaling: the same representation
    0.9999999999999999
    >>> linear_cka(x, x)
    1.0
    """
    first, second = _to_numpy(x, "x"), _to_numpy(y, "y")
    _check_rows("x", first)
    _check_rows("y", second)
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"x and y must hold the same examples (the same number of rows); received x of "
            f"shape {first.shape} and y of shape {second.shape}."
        )
    if _same_bits(first, second):
        return 1.0
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        return math.nan
    first_centred, first_constant = _centred(first)
    second_centred, second_constant = _centred(second)
    for name, array, constant in (("x", first, first_constant), ("y", second, second_constant)):
        if constant:
            raise ValueError(
                f"{name} has zero variance: each of its {array[0].size} features takes the same "
                f"value on all {array.shape[0]} examples, so CKA is undefined (0 / 0). Pass "
                "activations that differ between examples."
            )
    n, p, q = first.shape[0], first_centred.shape[1], second_centred.shape[1]
    if n * n * (p + q + 1) < n * (p * q + p * p + q * q):
        value = _cka_grams(first_centred @ first_centred.T, second_centred @ second_centred.T)
    else:
        value = _cka_features(first_centred, second_centred)
    return _bounded(value)


# ------------------------------------------------------------------------ choosing blocks
def representation_blocks(
    tree: LayerTree, base_path: str | None = None, max_blocks: int = DEFAULT_MAX_BLOCKS
) -> list[str]:
    """Chooses which of the base's block outputs to compare, in model order.

    The candidates are the base's direct layers that hold weights (`tree.base_layer_paths`):
    the layers freezing acts on, so a chart of them lines up with the layer tree, and a
    weightless layer (ReLU, pooling) mostly repeats the layer before it. When there are more
    than `max_blocks` of them (a deep base: MobileNetV2 has 104), the base is cut into
    `max_blocks` runs of consecutive candidates as equal as possible, and each run is
    represented by its LAST layer, so the base's last layer with weights is always kept and
    the chosen blocks are evenly spaced through its depth.

    Args:
        tree: The model's `LayerTree`.
        base_path: Path of the base model; defaults to `tree.default_base_path()`.
        max_blocks: The most blocks to return, at least 1.

    Returns:
        Layer paths, in model order.

    Raises:
        ValueError: When the base has no layer with weights, or `max_blocks` is below 1.

    Example:
    >>> [p.rsplit("/", 1)[-1] for p in representation_blocks(tree, max_blocks=3)]
    ['batch_norm1', 'batch_norm2', 'batch_norm3']
    """
    max_blocks = check_whole_number(
        "max_blocks", max_blocks, 1, hint="It is how many blocks the chart shows, e.g. 12."
    )
    base_path = base_path if base_path is not None else tree.default_base_path()
    candidates = tree.base_layer_paths(base_path)
    if not candidates:
        raise ValueError(
            f"The base '{base_path}' has no layer with weights, so no block can change. "
            "Pass the path of a base model that holds weights."
        )
    if len(candidates) <= max_blocks:
        return candidates
    count = len(candidates)
    # Run k (0-based) ends at candidate ceil((k + 1) * count / max_blocks) - 1.
    return [candidates[-(-(k + 1) * count // max_blocks) - 1] for k in range(max_blocks)]


# ------------------------------------------------------------------------ the Keras graph
def _graph_nodes(model: keras.Model) -> dict[int, list[Any]]:
    """The nodes of a Functional or Sequential model's own graph, by depth (0 = outputs)."""
    functional = (
        getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    )
    nodes_by_depth = getattr(functional, "_nodes_by_depth", None)
    if not nodes_by_depth or not getattr(model, "inputs", None):
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) has no layer graph to read block "
            "outputs from: the representation probe needs a Functional or Sequential base built "
            "with keras.Input. Subclassed bases are not supported."
        )
    return nodes_by_depth


def _node_in_graph(nodes_by_depth: dict[int, list[Any]], layer: keras.layers.Layer) -> Any:
    """The layer's last call in the graph (the one nearest the outputs), or None."""
    for depth in sorted(nodes_by_depth):
        for node in nodes_by_depth[depth]:
            if node.operation is layer:
                return node
    return None


def _upstream_layers(node: Any) -> list[Any]:
    """Every operation that feeds `node` (itself included), walking back to the inputs."""
    seen: dict[int, Any] = {}
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen[id(current)] = current
        stack.extend(current.parent_nodes)
    return [current.operation for current in seen.values()]


def _fits(expected: tuple, shape: tuple[int, ...]) -> bool:
    """Whether a batch of `shape` fits one-example shape `expected` (None: any size)."""
    return len(shape) == len(expected) + 1 and all(
        size is None or size == got for size, got in zip(expected, shape[1:], strict=True)
    )


def base_inputs(tree: LayerTree, x: Any, base_path: str | None = None, batch_size: int = 64) -> Any:
    """Runs the layers in front of the base on model inputs, giving the base's own inputs.

    A transfer model may adapt its input before the base sees it (`models.transfer`: uint8
    scaling, resizing, grayscale <-> RGB, rescaling, ImageNet preprocessing); the
    representation probe feeds the base directly, so it needs those adapted inputs. The
    layers in front of the base run once here, in inference mode, through one Functional
    sub-model. When the model's input IS the base's input (the bundled transfer models on
    their digits) nothing runs and `x` comes back as it is.

    Args:
        tree: The model's `LayerTree`.
        x: A batch of the model's inputs, shape (examples, ...) as `tree.model` takes them.
        base_path: Path of the base model; defaults to `tree.default_base_path()`.
        batch_size: Examples per compiled call.

    Returns:
        The batch the base receives: `x` itself, or a NumPy array.

    Raises:
        ValueError: When the base is not called directly by the top model's graph (a base
            nested two levels deep, or a subclassed top model): then pass base-ready inputs
            to `RepresentationProbe` yourself.

    Example:
    >>> probe = RepresentationProbe(tree, base_inputs(tree, dataset.x[:256]))
    """
    batch_size = check_whole_number("batch_size", batch_size, 1)
    base_path = base_path if base_path is not None else tree.default_base_path()
    base = tree.layer(base_path)
    model = tree.model
    if base is model:
        return x
    try:
        node = _node_in_graph(_graph_nodes(model), base)
    except ValueError:
        node = None
    if node is None or len(node.input_tensors) != 1:
        raise ValueError(
            f"The base '{base_path}' is not called with one input directly by model "
            f"'{model.name}', so its inputs cannot be computed here. Compute the batch the "
            "base receives yourself and pass it to RepresentationProbe."
        )
    feed = node.input_tensors[0]
    if any(feed is model_input for model_input in model.inputs):
        return x
    array = _to_numpy(x, "x")
    expected = tuple(model.inputs[0].shape[1:])
    if not _fits(expected, array.shape):
        raise ValueError(
            f"x must be a batch of model '{model.name}''s inputs, shape (examples, "
            f"{', '.join(str(s) for s in expected)}); received shape {array.shape}."
        )
    front = keras.Model(model.inputs, feed, name="representation_base_inputs")
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(front.predict_on_batch(array[start : start + batch_size]))
            for start in range(0, len(array), batch_size)
        ]
    )


# ----------------------------------------------------------------------------- the probe
@dataclass(frozen=True)
class _Capture:
    """What capture keeps of one block's output: its bits' digest and a CKA summary.

    The summary is the centred (n, p) float64 matrix when p <= n, else its (n, n) Gram matrix:
    memory at most n * min(n, p) floats per block, whatever the block's size.
    """

    digest: bytes
    kind: str
    summary: np.ndarray
    finite: bool
    constant: bool
    num_features: int


def _digest(array: np.ndarray) -> bytes:
    contiguous = np.ascontiguousarray(array)
    hasher = hashlib.blake2b(digest_size=32)
    hasher.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
    hasher.update(contiguous.view(np.uint8).data)
    return hasher.digest()


def _capture(array: np.ndarray) -> _Capture:
    finite = bool(np.isfinite(array).all())
    if not finite:
        return _Capture(_digest(array), _FEATURES, np.empty((0, 0)), False, False, array.shape[1])
    centred, constant = _centred(array)
    n, p = centred.shape
    if p <= n:
        return _Capture(_digest(array), _FEATURES, centred, True, constant, p)
    return _Capture(_digest(array), _GRAM, centred @ centred.T, True, constant, p)


def _gram(capture: _Capture) -> np.ndarray:
    summary = capture.summary
    return summary if capture.kind == _GRAM else summary @ summary.T


def _compare(before: _Capture, after: _Capture) -> tuple[float, bool]:
    """(cka, unchanged) of one block from its two captures."""
    if before.digest == after.digest:
        return 1.0, True
    if not (before.finite and after.finite) or before.constant or after.constant:
        return math.nan, False
    if before.kind == after.kind == _FEATURES:
        return _bounded(_cka_features(before.summary, after.summary)), False
    return _bounded(_cka_grams(_gram(before), _gram(after))), False


class RepresentationProbe:
    """Measures how much each block's features changed, on one held-out batch, with linear CKA.

    Call `capture()` before training and `compare()` after it (or at any point: `compare` may
    be called again, always against the capture). Both compute the chosen blocks' outputs on
    the probe batch in inference mode (`training=False`: BatchNormalization uses its moving
    statistics, Dropout drops nothing) with ONE Functional sub-model
    `keras.Model(base.inputs, [block outputs...])` sharing the base's layers and weights,
    called through `predict_on_batch` (compiled on TensorFlow and JAX).

    The probe feeds the base directly: `x_probe` must be what the base receives. For the
    bundled transfer models on their digits that is the model's input itself; for a base
    behind input adaptation (resizing, to_rgb, rescaling, preprocessing), pass
    `base_inputs(tree, x)`. Those inputs are fixed, so the probe measures the base alone.

    Memory stays bounded: only the first `max_examples` rows are kept, and capture keeps per
    block a digest of the output's bytes (for the bitwise `unchanged` check) and either the
    centred output (when it has at most `max_examples` features) or its n x n Gram matrix, never
    the raw activations: at most blocks x n^2 float64 values (12 x 256^2 x 8 bytes = 6 MB).
    Each compiled call takes `batch_size` examples, bounding the activations alive inside the
    model at once; the blocks' outputs for the whole probe batch are on the host briefly while
    capture or compare reduces them (89 MB of float32 for MobileNetV2 0.35 at 96 px with 12
    blocks and 256 examples; lower `max_examples` to lower it).

    When training runs on JAX, call `compare()` where Keras has written the trained values back
    into the variables (at an epoch end or after `fit`), as for any read of the weights.

    Args:
        tree: The model's `LayerTree`; its flags at compare time give the frame's `frozen`.
        x_probe: A held-out batch of base inputs, shape (examples, ...) as the base takes them
            (a NumPy array or a backend tensor); the first `max_examples` rows are used.
        base_path: Path of the base model; defaults to `tree.default_base_path()`.
        blocks: Layer paths whose outputs to compare (direct layers of the base, called in
            its graph); defaults to `representation_blocks(tree, base_path)`.
        max_examples: How many examples to keep, at least 2.
        batch_size: Examples per compiled call, at least 1.

    Raises:
        ValueError: When `x_probe` does not fit the base's input, holds fewer than 2 examples,
            or a block is not a layer called in the base's graph.

    Example:
    >>> tree = LayerTree(model)
    >>> probe = RepresentationProbe(tree, x_validation)
    >>> probe.capture()
    >>> model.fit(x_train, y_train, epochs=2, verbose=0)
    >>> probe.compare()[["block_path", "cka", "frozen"]]
    """

    def __init__(
        self,
        tree: LayerTree,
        x_probe: Any,
        base_path: str | None = None,
        blocks: Sequence[str] | None = None,
        max_examples: int = DEFAULT_MAX_EXAMPLES,
        batch_size: int = 64,
    ) -> None:
        if not isinstance(tree, LayerTree):
            raise TypeError(
                f"tree must be a LayerTree (models.tree.LayerTree(model)); received "
                f"{type(tree).__name__}."
            )
        self._max_examples = check_whole_number(
            "max_examples", max_examples, 2, hint="CKA compares examples with each other."
        )
        self._batch_size = check_whole_number("batch_size", batch_size, 1)
        self._tree = tree
        self._base_path = tree.canonical_path(
            base_path if base_path is not None else tree.default_base_path()
        )
        base = tree.layer(self._base_path)
        if not isinstance(base, keras.Model):
            raise ValueError(
                f"The base '{self._base_path}' is a {type(base).__name__}, not a keras.Model; "
                "pass the path of the base model (tree.default_base_path())."
            )
        nodes_by_depth = _graph_nodes(base)
        if blocks is None:
            blocks = representation_blocks(tree, self._base_path)
        if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks:
            raise ValueError(
                f"blocks must be a non-empty list of layer paths inside the base "
                f"'{self._base_path}', e.g. representation_blocks(tree); received {blocks!r}."
            )
        self._blocks = [tree.canonical_path(path) for path in blocks]
        if len(set(self._blocks)) != len(self._blocks):
            raise ValueError(f"blocks name a layer twice; received {list(blocks)!r}.")
        self._nodes = []
        for path in self._blocks:
            node = _node_in_graph(nodes_by_depth, tree.layer(path))
            if node is None:
                raise ValueError(
                    f"The layer '{path}' is not called in the graph of the base "
                    f"'{self._base_path}', so it has no output to compare. Pick blocks from "
                    f"tree.base_layer_paths('{self._base_path}')."
                )
            self._nodes.append(node)
        self._output_counts = [len(node.output_tensors) for node in self._nodes]
        outputs = [tensor for node in self._nodes for tensor in node.output_tensors]
        self._x = self._probe_batch(x_probe, base)
        self._submodel = keras.Model(base.inputs, outputs, name="representation_probe")
        self._captures: list[_Capture] | None = None

    def _probe_batch(self, x_probe: Any, base: keras.Model) -> np.ndarray:
        if len(base.inputs) != 1:
            raise ValueError(
                f"The base '{self._base_path}' takes {len(base.inputs)} inputs; the probe "
                "supports a base with one input."
            )
        array = _to_numpy(x_probe, "x_probe")[: self._max_examples]
        expected = tuple(base.inputs[0].shape[1:])
        if not _fits(expected, array.shape):
            shape = ", ".join("None" if size is None else str(size) for size in expected)
            raise ValueError(
                f"x_probe must be a batch of the base's inputs, shape (examples, {shape}) for "
                f"base '{self._base_path}'; received shape {array.shape}. If the model adapts "
                "its input before the base, pass base_inputs(tree, x)."
            )
        if array.shape[0] < 2:
            raise ValueError(
                f"x_probe must hold at least 2 examples (CKA compares examples with each "
                f"other); received shape {array.shape}."
            )
        return np.array(array, copy=True)

    # ------------------------------------------------------------------------- reading
    @property
    def blocks(self) -> list[str]:
        """The compared layer paths, in model order."""
        return list(self._blocks)

    @property
    def base_path(self) -> str:
        """The base model's path."""
        return self._base_path

    @property
    def num_examples(self) -> int:
        """How many probe examples are compared (at most `max_examples`)."""
        return int(self._x.shape[0])

    @property
    def captured(self) -> bool:
        """Whether `capture()` has run."""
        return self._captures is not None

    # ------------------------------------------------------------------------ measuring
    def _block_outputs(self) -> list[np.ndarray]:
        """Each block's output on the probe batch, flattened per example, as NumPy."""
        chunks: list[list[np.ndarray]] = [[] for _ in self._nodes]
        for start in range(0, self.num_examples, self._batch_size):
            outputs = self._submodel.predict_on_batch(self._x[start : start + self._batch_size])
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            index = 0
            for block, count in enumerate(self._output_counts):
                parts = [
                    np.asarray(keras.ops.convert_to_numpy(output)).reshape(len(output), -1)
                    for output in outputs[index : index + count]
                ]
                index += count
                chunks[block].append(parts[0] if count == 1 else np.concatenate(parts, axis=1))
        return [np.concatenate(parts) for parts in chunks]

    def capture(self) -> None:
        """Computes and keeps the blocks' outputs on the probe batch (call it before training).

        Keeps a digest and a CKA summary per block (see the class docstring); calling it again
        replaces the previous capture.

        Example:
        >>> probe.capture()
        >>> probe.captured
        True
        """
        self._captures = [_capture(output) for output in self._block_outputs()]

    def compare(self) -> pd.DataFrame:
        """Computes the blocks' outputs again and compares them with the capture.

        Returns:
            A DataFrame, one row per block in model order, with the columns
            `REPRESENTATION_COLUMNS`: `block_path`, `block_name` (the layer's display name),
            `class_name`, `cka` (float64; exactly 1.0 only when `unchanged`; NaN when the
            output holds NaN/infinity or is constant over the batch, at either end, and is not
            unchanged), `unchanged` (the output is bitwise the one captured), `frozen` (nothing
            inside the block's layer trains now: `not node.effectively_trainable` for a plain
            layer, and no trainable variable left anywhere inside a nested one), `frozen_through`
            (the block and every layer with weights that feeds it in the base are frozen now:
            such a block must read `unchanged`) and `num_features` (values per example).
            `frozen` and `frozen_through` describe the flags at compare time: a block unfrozen
            for part of the run (a schedule) may be frozen now and still have changed.

        Raises:
            RuntimeError: When `capture()` has not run.

        Example:
        >>> frame = probe.compare()
        >>> frame.loc[frame["frozen_through"], "cka"].eq(1.0).all()
        True
        """
        if self._captures is None:
            raise RuntimeError(
                "compare() needs the outputs captured before training: call probe.capture() "
                "first (e.g. at the start of fit)."
            )
        afters = [_capture(output) for output in self._block_outputs()]
        nodes = {node.path: node for node in self._tree.nodes()}

        def is_frozen(layer: Any) -> bool:
            try:
                path = self._tree.path_of(layer)
            except ValueError:  # an operation without weights (e.g. keras.ops.add)
                return True
            return nodes[path].trainable_params == 0

        rows = []
        for path, node, before, after in zip(
            self._blocks, self._nodes, self._captures, afters, strict=True
        ):
            layer = self._tree.layer(path)
            cka, unchanged = _compare(before, after)
            rows.append(
                (
                    path,
                    display_name(layer.name),
                    type(layer).__name__,
                    cka,
                    unchanged,
                    is_frozen(layer),
                    all(is_frozen(operation) for operation in _upstream_layers(node)),
                    after.num_features,
                )
            )
        frame = pd.DataFrame(rows, columns=list(REPRESENTATION_COLUMNS))
        return frame.astype(dict(zip(REPRESENTATION_COLUMNS, _REPRESENTATION_DTYPES, strict=True)))


# --------------------------------------------------------------------- during training
@dataclass(frozen=True)
class RepresentationReport:
    """What a run's representation probe found so far (the `Job.representation()` answer).

    Attributes:
        frame: `RepresentationProbe.compare`'s frame at the last comparison (columns
            `REPRESENTATION_COLUMNS`); empty before the first epoch ended, or when the probe
            could not run (then `note` says why).
        note: In words: which examples were compared and when, or why nothing was.
        epoch: Epochs finished at the last comparison (0 when none).
        num_examples: Examples in the probe batch (0 when the probe could not run).
        held_out: Whether the probe examples were held out from training (the validation
            split); False when the run had no validation split and training examples were used.

    Example:
    >>> report = job.representation()
    >>> report.frame[["block_name", "cka"]]
    """

    frame: pd.DataFrame
    note: str = ""
    epoch: int = 0
    num_examples: int = 0
    held_out: bool = False

    @classmethod
    def empty(cls, note: str = NOT_MEASURED_YET) -> RepresentationReport:
        """A report with no comparison (yet), saying why in `note`."""
        return cls(frame=_empty_frame(), note=note)


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            column: pd.Series(dtype=dtype)
            for column, dtype in zip(REPRESENTATION_COLUMNS, _REPRESENTATION_DTYPES, strict=True)
        }
    )


class RepresentationRecorder(keras.callbacks.Callback):
    """Keeps a run's representation change up to date: capture at the start, compare per epoch.

    A Keras callback for `fit`. At the first `on_train_begin` it builds a `RepresentationProbe`
    on the probe batch (computing the base's own inputs with `base_inputs` when the model
    adapts its input first) and captures the blocks' outputs; at every epoch end, and once more
    when the job calls `finish()` after `fit` (a run stopped mid-epoch), it compares them again,
    always against that first capture. A schedule passes the same recorder to every phase, so
    its comparison spans the whole schedule.

    The probe never fails a run: when it cannot be built (a subclassed base, inputs the base
    cannot take) or a comparison raises, the error is logged and `report().note` says so.

    Args:
        tree: The model's `LayerTree`.
        x_probe: A batch of the MODEL's inputs (e.g. the validation split), or None when the
            run has none (then the report says so).
        held_out: Whether `x_probe` was held out from training.
        base_path: Path of the base model; defaults to `tree.default_base_path()`.
        max_examples: How many probe examples to compare at most.

    Example:
    >>> recorder = RepresentationRecorder(tree, x_validation, held_out=True)
    >>> model.fit(x_train, y_train, epochs=2, callbacks=[recorder], verbose=0)
    >>> recorder.report().frame[["block_name", "cka"]]
    """

    def __init__(
        self,
        tree: LayerTree,
        x_probe: Any,
        *,
        held_out: bool = True,
        base_path: str | None = None,
        max_examples: int = DEFAULT_MAX_EXAMPLES,
    ) -> None:
        super().__init__()
        self._tree = tree
        self._x = None if x_probe is None else x_probe[:max_examples]
        self._held_out = bool(held_out)
        self._base_path = base_path
        self._max_examples = max_examples
        self._probe: RepresentationProbe | None = None
        self._problem = (
            ""
            if x_probe is not None
            else ("No examples to probe: the run's data is a tf.data pipeline without arrays.")
        )
        self._report = RepresentationReport.empty(self._problem or NOT_MEASURED_YET)
        self._epoch = 0
        self._stale = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None) -> None:
        if self._probe is None and not self._problem:
            try:
                inputs = base_inputs(self._tree, self._x, self._base_path)
                probe = RepresentationProbe(
                    self._tree, inputs, self._base_path, max_examples=self._max_examples
                )
                probe.capture()
            except Exception as error:  # the probe is a view; it never ends a run
                LOGGER.warning("Representation probe unavailable: %s", error)
                self._problem = f"The representation probe could not run: {error}"
                self._set(RepresentationReport.empty(self._problem))
                return
            self._probe = probe
            self._set(RepresentationReport.empty())

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._stale = True

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._epoch += 1
        _ = self.model  # on JAX, Keras writes the trained values back into the variables
        self._compare()

    # ----------------------------------------------------------------------------- results
    def finish(self) -> None:
        """Compares once more when training went on after the last comparison (a Stop)."""
        if self._stale:
            self._compare()

    def _compare(self) -> None:
        self._stale = False
        if self._probe is None:
            return
        try:
            frame = self._probe.compare()
        except Exception as error:  # e.g. a model changed under the probe
            LOGGER.warning("Representation comparison failed: %s", error)
            self._set(RepresentationReport.empty(f"The comparison failed: {error}"))
            return
        source = "held-out validation" if self._held_out else "training (no validation split)"
        self._set(
            RepresentationReport(
                frame=frame,
                note=(
                    f"Linear CKA of each block's output on {self._probe.num_examples} "
                    f"{source} examples: before training vs now ({self._epoch} epoch(s) "
                    "finished)."
                ),
                epoch=self._epoch,
                num_examples=self._probe.num_examples,
                held_out=self._held_out,
            )
        )

    def _set(self, report: RepresentationReport) -> None:
        with self._lock:
            self._report = report

    def report(self) -> RepresentationReport:
        """The latest `RepresentationReport` (thread-safe)."""
        with self._lock:
            return self._report
