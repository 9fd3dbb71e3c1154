"""Compute the lessons page's live numbers from real Keras objects, one function per lesson step.

The steps follow the Keras guide "Transfer learning & fine-tuning": the weights of a layer,
BatchNormalization's non-trainable state, freezing a layer, training with a frozen layer,
recursive freezing of nested models, and the transfer-learning workflow. Every number here is
read from a Keras layer or model built for the purpose, never typed in.

Example:
>>> dense_weights(units=2, input_dim=2).num_trainable_weights
2
>>> batch_norm_weights(features=2).num_non_trainable_weights
2
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from models.advisor import advise, apply_plan, base_weight_parameters, default_budget
from models.bundled import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.diagnostics import speed_verdicts
from models.drift import DriftRecorder
from models.job import JobState
from models.names import display_name
from models.pitfalls import (
    BASE_PATH,
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LEARNING_RATE,
    HEAD_EPOCHS,
    HEAD_LEARNING_RATE,
    base_drift,
    original_task_accuracy,
    two_phase_fine_tune,
)
from models.training import TrainingJob
from models.training_config import TrainingConfig
from models.tree import LayerTree, set_trainable
from models.validation import check_whole_number

MAX_UNITS = 64
MAX_INPUT_DIM = 64


# ------------------------------------------------------------------------- weights of layers
@dataclass(frozen=True)
class WeightInfo:
    """One weight variable of a layer.

    Attributes:
        name: The variable's name, e.g. "kernel" or "moving_mean".
        shape: Its shape.
        trainable: Whether Keras lists it in the layer's `trainable_weights`.
        num_params: Number of scalars in it.
    """

    name: str
    shape: tuple[int, ...]
    trainable: bool
    num_params: int


@dataclass(frozen=True)
class LayerWeights:
    """A layer's weights as Keras reports them.

    Attributes:
        class_name: The layer's class, e.g. "Dense".
        trainable: The layer's `trainable` flag.
        weights: Every weight variable, in `layer.weights` order.
        num_weights: `len(layer.weights)`.
        num_trainable_weights: `len(layer.trainable_weights)`.
        num_non_trainable_weights: `len(layer.non_trainable_weights)`.
        trainable_params: Scalars in the trainable weights.
        non_trainable_params: Scalars in the non-trainable weights.
    """

    class_name: str
    trainable: bool
    weights: tuple[WeightInfo, ...]
    num_weights: int
    num_trainable_weights: int
    num_non_trainable_weights: int
    trainable_params: int
    non_trainable_params: int


def _check_size(name: str, value: int, maximum: int) -> int:
    return int(check_whole_number(name, value, 1, maximum))


def _describe(layer: keras.layers.Layer) -> LayerWeights:
    trainable_ids = {id(variable) for variable in layer.trainable_weights}
    weights = tuple(
        WeightInfo(
            name=variable.name,
            shape=tuple(int(size) for size in variable.shape),
            trainable=id(variable) in trainable_ids,
            num_params=int(math.prod(variable.shape)),
        )
        for variable in layer.weights
    )
    return LayerWeights(
        class_name=type(layer).__name__,
        trainable=bool(layer.trainable),
        weights=weights,
        num_weights=len(layer.weights),
        num_trainable_weights=len(layer.trainable_weights),
        num_non_trainable_weights=len(layer.non_trainable_weights),
        trainable_params=sum(w.num_params for w in weights if w.trainable),
        non_trainable_params=sum(w.num_params for w in weights if not w.trainable),
    )


def dense_weights(units: int = 2, input_dim: int = 3) -> LayerWeights:
    """Builds a `Dense(units)` layer for `input_dim` inputs and reports its weights.

    Args:
        units: Output size, 1 to 64.
        input_dim: Input size, 1 to 64.

    Returns:
        A `LayerWeights`: 2 weights (kernel `(input_dim, units)` and bias `(units,)`), both
        trainable.

    Example:
    >>> info = dense_weights(units=2, input_dim=3)
    >>> info.num_weights, info.num_trainable_weights, info.num_non_trainable_weights
    (2, 2, 0)
    """
    units = _check_size("units", units, MAX_UNITS)
    input_dim = _check_size("input_dim", input_dim, MAX_INPUT_DIM)
    layer = keras.layers.Dense(units)
    layer.build((None, input_dim))
    return _describe(layer)


def batch_norm_weights(features: int = 3) -> LayerWeights:
    """Builds a `BatchNormalization` layer for `features` channels and reports its weights.

    Args:
        features: Number of features (channels), 1 to 64.

    Returns:
        A `LayerWeights`: 4 weights; gamma and beta trainable, moving mean and variance not.

    Example:
    >>> info = batch_norm_weights(features=3)
    >>> info.num_weights, info.num_trainable_weights, info.num_non_trainable_weights
    (4, 2, 2)
    """
    features = _check_size("features", features, MAX_INPUT_DIM)
    layer = keras.layers.BatchNormalization()
    layer.build((None, features))
    return _describe(layer)


def frozen_dense(trainable: bool = False, units: int = 2, input_dim: int = 3) -> LayerWeights:
    """Builds a Dense layer, sets `layer.trainable`, and reports where its weights went.

    Args:
        trainable: The flag to set; False freezes the layer.
        units: Output size, 1 to 64.
        input_dim: Input size, 1 to 64.

    Returns:
        A `LayerWeights`: frozen, both weights move to `non_trainable_weights` (0 and 2).

    Example:
    >>> info = frozen_dense(trainable=False)
    >>> info.num_trainable_weights, info.num_non_trainable_weights
    (0, 2)
    """
    if not isinstance(trainable, bool):
        raise TypeError(f"`trainable` must be True or False, received {trainable!r}.")
    units = _check_size("units", units, MAX_UNITS)
    input_dim = _check_size("input_dim", input_dim, MAX_INPUT_DIM)
    layer = keras.layers.Dense(units)
    layer.build((None, input_dim))
    layer.trainable = trainable
    return _describe(layer)


# ------------------------------------------------------------------ training with a frozen layer
@dataclass(frozen=True)
class LayerChange:
    """How one layer's weights changed during a fit.

    Attributes:
        name: The layer's name.
        trainable: Its flag during the fit.
        bitwise_equal: Whether every weight is byte-for-byte equal after the fit.
        max_abs_change: max |W_after - W_before| over its weights.
        kernel_before: The first few kernel values before the fit.
        kernel_after: The same values after the fit.
    """

    name: str
    trainable: bool
    bitwise_equal: bool
    max_abs_change: float
    kernel_before: tuple[float, ...]
    kernel_after: tuple[float, ...]


@dataclass(frozen=True)
class FrozenTrainingCheck:
    """The outcome of training a small model whose first layer is frozen.

    Attributes:
        layers: One `LayerChange` per Dense layer, in model order.
        loss: The training loss per epoch.
        verification_message: `DriftRecorder.verify().message()` for the same fit.
    """

    layers: tuple[LayerChange, ...]
    loss: tuple[float, ...]
    verification_message: str

    def layer(self, name: str) -> LayerChange:
        """Returns the `LayerChange` of the layer called `name`."""
        for change in self.layers:
            if change.name == name:
                return change
        raise ValueError(f"No layer '{name}'; layers are {[c.name for c in self.layers]}.")


def _bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def train_with_frozen_layer(seed: int = 0, epochs: int = 3) -> FrozenTrainingCheck:
    """Trains `Dense(3) -> Dense(3)` with the first layer frozen and checks it bitwise.

    The model is compiled after freezing (the right way), trained on 64 random samples, and
    each layer's weights are compared byte for byte with their values before `fit`.

    Args:
        seed: Seed of the weights, the data and the batch order.
        epochs: Epochs to train, 1 to 20.

    Returns:
        A `FrozenTrainingCheck`: the frozen layer "frozen_dense" is bitwise equal, the other
        one, "trainable_dense", moved.

    Example:
    >>> check = train_with_frozen_layer(seed=0)
    >>> check.layer("frozen_dense").bitwise_equal
    True
    """
    epochs = _check_size("epochs", epochs, 20)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(3, activation="relu", name="frozen_dense"),
            keras.layers.Dense(3, name="trainable_dense"),
        ],
        name="lesson_model",
    )
    model.get_layer("frozen_dense").trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    rng = np.random.default_rng(seed)
    x = rng.random((64, 3), dtype=np.float32)
    y = rng.random((64, 3), dtype=np.float32)
    layers = [model.get_layer("frozen_dense"), model.get_layer("trainable_dense")]
    before = [[np.array(w.numpy(), copy=True) for w in layer.weights] for layer in layers]
    recorder = DriftRecorder(LayerTree(model))
    history = model.fit(x, y, epochs=epochs, batch_size=16, callbacks=[recorder], verbose=0)
    changes = []
    for layer, starts in zip(layers, before, strict=True):
        afters = [np.array(w.numpy(), copy=True) for w in layer.weights]
        changes.append(
            LayerChange(
                name=layer.name,
                trainable=bool(layer.trainable),
                bitwise_equal=all(
                    _bits(a) == _bits(b) for a, b in zip(afters, starts, strict=True)
                ),
                max_abs_change=max(
                    float(np.max(np.abs(a - b))) for a, b in zip(afters, starts, strict=True)
                ),
                kernel_before=tuple(float(v) for v in starts[0].ravel()[:3]),
                kernel_after=tuple(float(v) for v in afters[0].ravel()[:3]),
            )
        )
    return FrozenTrainingCheck(
        layers=tuple(changes),
        loss=tuple(float(v) for v in history.history["loss"]),
        verification_message=recorder.verify().message(),
    )


# ------------------------------------------------------------------------------ nested models
@dataclass(frozen=True)
class NodeState:
    """One layer of the nested example: its flag and what Keras really does with it.

    Attributes:
        path: The layer's path in the tree, e.g. "outer/inner/dense_a".
        class_name: The layer's class.
        trainable: Its own `trainable` flag.
        effectively_trainable: Whether `fit` on the outer model updates it.
        trainable_params: Trainable parameters of it and everything under it.
        non_trainable_params: Non-trainable parameters of it and everything under it.
    """

    path: str
    class_name: str
    trainable: bool
    effectively_trainable: bool
    trainable_params: int
    non_trainable_params: int


@dataclass(frozen=True)
class NestedFreezeResult:
    """Flags and counts of an outer model holding an inner model, after a freeze plan.

    Attributes:
        nodes: Every node: outer, its layers, the inner model and its layers.
        keras_trainable_weights: Paths of the variables in `outer.trainable_weights`: exactly
            what `fit` on the outer model updates.
        inner_trainable_weights: Number of variables in `inner.trainable_weights`.
        trainable_params: The outer model's trainable total (equals Keras's).
        non_trainable_params: The outer model's non-trainable total (equals Keras's).
    """

    nodes: tuple[NodeState, ...]
    keras_trainable_weights: tuple[str, ...]
    inner_trainable_weights: int
    trainable_params: int
    non_trainable_params: int

    def node(self, path: str) -> NodeState:
        """Returns the `NodeState` at `path`."""
        for node in self.nodes:
            if node.path == path:
                return node
        raise ValueError(f"No node '{path}'; nodes are {[n.path for n in self.nodes]}.")


def build_nested_example() -> keras.Model:
    """Builds the nested example: outer = [inner = [dense_a, dense_b], head].

    Returns:
        A built Functional model "outer" whose layer "inner" is a Sequential model.

    Example:
    >>> [layer.name for layer in build_nested_example().layers]
    ['features', 'inner', 'head']
    """
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="dense_a"),
            keras.layers.Dense(3, name="dense_b"),
        ],
        name="inner",
    )
    inputs = keras.Input((4,), name="features")
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    return keras.Model(inputs, outputs, name="outer")


def nested_freeze(
    outer_trainable: bool = False,
    inner_child_trainable: bool = False,
    *,
    inner_trainable: bool | None = None,
) -> NestedFreezeResult:
    """Sets flags on a nested model in Keras's order and reports flags and real training.

    The flags are set in this order, each with Keras's recursive semantics: `outer.trainable`,
    then (if given) `inner.trainable`, then `inner.dense_a.trainable`.

    Args:
        outer_trainable: Flag for the outer model (recursively sets everything under it).
        inner_child_trainable: Flag set afterwards on the inner model's first layer "dense_a".
        inner_trainable: Optional flag set on the inner model before the child's.

    Returns:
        A `NestedFreezeResult` with every flag, count and the weights Keras trains.

    Example:
    >>> result = nested_freeze(outer_trainable=False, inner_child_trainable=False)
    >>> result.node("outer/inner/dense_b").trainable
    False
    """
    for name, value in (
        ("outer_trainable", outer_trainable),
        ("inner_child_trainable", inner_child_trainable),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` must be True or False, received {value!r}.")
    if inner_trainable is not None and not isinstance(inner_trainable, bool):
        raise TypeError(f"`inner_trainable` must be None, True or False, got {inner_trainable!r}.")
    model = build_nested_example()
    tree = LayerTree(model)
    set_trainable(model, outer_trainable)
    if inner_trainable is not None:
        set_trainable(model.get_layer("inner"), inner_trainable)
    set_trainable(model.get_layer("inner").get_layer("dense_a"), inner_child_trainable)
    totals = tree.totals()
    return NestedFreezeResult(
        nodes=tuple(
            NodeState(
                path=node.path,
                class_name=node.class_name,
                trainable=node.trainable,
                effectively_trainable=node.effectively_trainable,
                trainable_params=node.trainable_params,
                non_trainable_params=node.non_trainable_params,
            )
            for node in tree.nodes()
        ),
        keras_trainable_weights=tuple(variable.path for variable in model.trainable_weights),
        inner_trainable_weights=len(model.get_layer("inner").trainable_weights),
        trainable_params=totals.trainable,
        non_trainable_params=totals.non_trainable,
    )


# ------------------------------------------------------------ the flag vs what really trains
@dataclass(frozen=True)
class LayerTraining:
    """One layer of the nested example: its flag, FreezeLab's badge, and what Keras did.

    Attributes:
        path: e.g. "outer/inner/dense_a".
        flag: The layer's own `trainable` flag.
        badge_trains: What FreezeLab's tree shows ("really trains" badge,
            `LayerNode.effectively_trainable`).
        in_trainable_weights: Whether its kernel is in the outer model's `trainable_weights`.
        moved: Whether `fit` on the outer model changed its kernel (bitwise).
        kernel_change: max |kernel_after - kernel_before|.
    """

    path: str
    flag: bool
    badge_trains: bool
    in_trainable_weights: bool
    moved: bool
    kernel_change: float


@dataclass(frozen=True)
class FlagVersusTraining:
    """The nested example with the inner model frozen and one of its layers set trainable.

    Attributes:
        layers: Every Dense layer, in model order.
        keras_version: The Keras it was measured on (`models.keras_version.KerasEnvironment`).
    """

    layers: tuple[LayerTraining, ...]
    keras_version: str

    def layer(self, path: str) -> LayerTraining:
        """Returns the `LayerTraining` at `path`."""
        for layer in self.layers:
            if layer.path == path:
                return layer
        raise ValueError(f"No layer '{path}'; layers are {[layer.path for layer in self.layers]}.")

    @property
    def badge_matches_keras(self) -> bool:
        """Whether the tree's badge equals what Keras really trained, for every layer."""
        return all(layer.badge_trains == layer.moved for layer in self.layers)


def flag_versus_training(seed: int = 0, *, child_trainable: bool = True) -> FlagVersusTraining:
    """Freezes the inner model, sets its 'dense_a' back, trains the outer model, and measures.

    The flags are set in Keras's order: `inner.trainable = False` (recursively), then
    `inner.dense_a.trainable = child_trainable`. Then the outer model is compiled and fitted
    for one epoch, and each Dense kernel is compared bitwise with its value before.

    Args:
        seed: Seed of the weights and data.
        child_trainable: The flag set on 'dense_a' after freezing 'inner'.

    Returns:
        A `FlagVersusTraining`: per layer, the flag, the tree's badge, Keras's
        `trainable_weights` and what moved.

    Example:
    >>> result = flag_versus_training()
    >>> result.layer("outer/inner/dense_a").flag, result.badge_matches_keras
    (True, True)
    """
    from models.keras_version import installed_keras

    if not isinstance(child_trainable, bool):
        raise TypeError(f"`child_trainable` must be True or False, received {child_trainable!r}.")
    keras.utils.set_random_seed(check_whole_number("seed", seed, 0))
    model = build_nested_example()
    tree = LayerTree(model)
    inner = model.get_layer("inner")
    set_trainable(inner, False)
    set_trainable(inner.get_layer("dense_a"), child_trainable)
    dense_layers = [
        ("outer/inner/dense_a", inner.get_layer("dense_a")),
        ("outer/inner/dense_b", inner.get_layer("dense_b")),
        ("outer/head", model.get_layer("head")),
    ]
    before = {path: np.array(layer.kernel.numpy(), copy=True) for path, layer in dense_layers}
    trained_ids = {id(variable) for variable in model.trainable_weights}
    generator = np.random.default_rng(seed)
    x = generator.normal(size=(32, 4)).astype("float32")
    y = generator.normal(size=(32, 2)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    layers = []
    for path, layer in dense_layers:
        after = layer.kernel.numpy()
        layers.append(
            LayerTraining(
                path=path,
                flag=bool(layer.trainable),
                badge_trains=bool(tree.node(path).effectively_trainable),
                in_trainable_weights=id(layer.kernel) in trained_ids,
                moved=not np.array_equal(after, before[path]),
                kernel_change=float(np.max(np.abs(after - before[path]))),
            )
        )
    return FlagVersusTraining(tuple(layers), installed_keras().label)


# ------------------------------------------------------------------------ transfer workflow
@dataclass(frozen=True)
class WorkflowPhase:
    """One phase of the transfer-learning workflow, measured.

    Attributes:
        name: "head" (frozen base, new head) or "fine_tune" (base unfrozen, low rate).
        description: What the phase did, in plain words.
        learning_rate: The phase's learning rate.
        epochs: The phase's epochs.
        trainable_params: Trainable parameters during the phase.
        non_trainable_params: Non-trainable parameters during the phase.
        validation_accuracy: Accuracy on held-out digits 5-9 at the end of the phase.
        base_drift: Largest relative change of a base layer's weights since the very start.
        original_task_accuracy: The base with its original classifier on digits 0-4.
    """

    name: str
    description: str
    learning_rate: float
    epochs: int
    trainable_params: int
    non_trainable_params: int
    validation_accuracy: float
    base_drift: float
    original_task_accuracy: float


@dataclass(frozen=True)
class WorkflowResult:
    """The two phases of the transfer-learning workflow.

    Attributes:
        phases: The "head" phase, then the "fine_tune" phase.
        history: Per-epoch history of both phases together.
        seconds: Wall-clock time.
    """

    phases: tuple[WorkflowPhase, ...]
    history: dict[str, list[float]]
    seconds: float

    def phase(self, name: str) -> WorkflowPhase:
        """Returns the phase called `name` ("head" or "fine_tune")."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise ValueError(f"No phase '{name}'; phases are {[p.name for p in self.phases]}.")


def transfer_workflow(seed: int = 0) -> WorkflowResult:
    """Runs the transfer-learning workflow on the bundled base and digits 5-9, measured.

    Phase 1: freeze the pretrained base, add a new head, train. Phase 2: unfreeze the base
    (BatchNormalization kept frozen), recompile with a 10x lower learning rate, fine-tune.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        A `WorkflowResult` with counts, accuracy and base drift per phase (a few seconds).

    Example:
    >>> result = transfer_workflow(seed=0)
    >>> result.phase("head").base_drift
    0.0
    """
    started = time.perf_counter()
    phases: list[WorkflowPhase] = []
    settings = {
        "head": (
            HEAD_LEARNING_RATE,
            HEAD_EPOCHS,
            "Base frozen (base.trainable = False), new head trained.",
        ),
        "fine_tune": (
            FINE_TUNE_LEARNING_RATE,
            FINE_TUNE_EPOCHS,
            "Base unfrozen except BatchNormalization, recompiled, fine-tuned at a low rate.",
        ),
    }

    def on_phase_end(
        phase: str, tree: LayerTree, recorder: DriftRecorder, history: dict[str, list[float]]
    ) -> None:
        learning_rate, epochs, description = settings[phase]
        counts = tree.totals()
        phases.append(
            WorkflowPhase(
                name=phase,
                description=description,
                learning_rate=learning_rate,
                epochs=epochs,
                trainable_params=counts.trainable,
                non_trainable_params=counts.non_trainable,
                validation_accuracy=float(history["val_accuracy"][-1]),
                base_drift=base_drift(recorder.frame()),
                original_task_accuracy=original_task_accuracy(tree.layer(BASE_PATH)),
            )
        )

    _, _, _, history = two_phase_fine_tune(seed, on_phase_end=on_phase_end)
    return WorkflowResult(
        phases=tuple(phases), history=history, seconds=time.perf_counter() - started
    )


# ----------------------------------------------------------------------------- diagnostics
@dataclass(frozen=True)
class DiagnosticsLesson:
    """The three diagnostics, measured on one short run of the bundled base on digits 5-9.

    Attributes:
        ranking: The advisor's ranking before training (`models.advisor`): rank, unit,
            parameters, relative_gradient, and "in_plan".
        plan_message: The advisor's plan in words.
        baseline_message: "Unfreeze the top N" with the same budget, in words.
        statistics: Each training layer's last update-to-weight ratio and gradient norm
            (`models.diagnostics`): layer, update_ratio, gradient_norm, verdict ("too fast",
            "too slow" or "healthy").
        representation: Linear CKA per block of the base after the run
            (`models.representation`): block, cka, frozen_through.
        learning_rate: The run's learning rate.
        epochs: The run's epochs.
        validation_accuracy: Accuracy on held-out digits 5-9 after the run.
        seconds: Wall-clock time of the whole lesson.
    """

    ranking: pd.DataFrame
    plan_message: str
    baseline_message: str
    statistics: pd.DataFrame
    representation: pd.DataFrame
    learning_rate: float
    epochs: int
    validation_accuracy: float
    seconds: float


def diagnostics_lesson(
    seed: int = 0, learning_rate: float = 1e-2, epochs: int = 3
) -> DiagnosticsLesson:
    """Runs the advisor, applies its plan, trains briefly, and reads the three diagnostics.

    On the bundled base (pretrained on digits 0-4) with a new head for digits 5-9: the advisor
    ranks the base's layers by relative gradient and plans within a quarter of the base's
    parameters; the plan is applied; a `TrainingJob` trains it, recording the per-layer
    update-to-weight ratios and the representation change of every block, as every FreezeLab
    run does.

    Args:
        seed: Seed of the head, the split and the batch order.
        learning_rate: The run's learning rate (try 1e-1 to see "too fast" layers).
        epochs: Epochs to train, 1 to 10.

    Returns:
        A `DiagnosticsLesson` (a few seconds on 2 cores).

    Example:
    >>> lesson = diagnostics_lesson(seed=0)
    >>> lesson.representation.loc[lesson.representation.frozen_through, "cka"].eq(1.0).all()
    True
    """
    epochs = check_whole_number("epochs", epochs, 1, 10)
    started = time.perf_counter()
    data = load_bundled_dataset("digits_5_9")
    keras.utils.set_random_seed(seed)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    advice = advise(
        tree, data.x, data.y, default_budget(base_weight_parameters(tree, BASE_PATH)),
        base_path=BASE_PATH, seed=seed,
    )  # fmt: skip
    apply_plan(tree, advice.plan, BASE_PATH)
    job = TrainingJob(
        model,
        data.x,
        data.y,
        config=TrainingConfig(epochs=epochs, learning_rate=learning_rate, seed=seed),
        tree=tree,
    )
    progress = job.run()
    if progress.state is not JobState.FINISHED:
        raise RuntimeError(f"The lesson's run did not finish: {progress.message}")
    chosen = set(advice.plan.units)
    ranking = advice.ranking[["rank", "unit", "parameters", "relative_gradient"]].copy()
    ranking["in_plan"] = ranking.unit.isin(chosen)
    frame = job.step_statistics_frame()
    verdicts = speed_verdicts(frame)
    last = frame.groupby("layer_path", sort=False).tail(1)
    statistics = pd.DataFrame(
        {
            "layer": [display_name(path.rsplit("/", 1)[-1]) for path in last.layer_path],
            "update_ratio": last.update_ratio.to_numpy(),
            "gradient_norm": last.gradient_norm.to_numpy(),
            "verdict": [
                "too fast"
                if path in verdicts["too_fast"]
                else ("too slow" if path in verdicts["too_slow"] else "healthy")
                for path in last.layer_path
            ],
        }
    )
    representation = job.representation().frame
    return DiagnosticsLesson(
        ranking=ranking.reset_index(drop=True),
        plan_message=advice.plan.message(),
        baseline_message=advice.baseline.message(),
        statistics=statistics,
        representation=pd.DataFrame(
            {
                "block": representation.block_name,
                "cka": representation.cka,
                "frozen_through": representation.frozen_through,
            }
        ),
        learning_rate=learning_rate,
        epochs=epochs,
        validation_accuracy=float(progress.history["val_accuracy"][-1]),
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "DiagnosticsLesson",
    "FrozenTrainingCheck",
    "LayerChange",
    "LayerWeights",
    "NestedFreezeResult",
    "NodeState",
    "WeightInfo",
    "WorkflowPhase",
    "WorkflowResult",
    "batch_norm_weights",
    "build_nested_example",
    "dense_weights",
    "diagnostics_lesson",
    "frozen_dense",
    "nested_freeze",
    "train_with_frozen_layer",
    "transfer_workflow",
]
