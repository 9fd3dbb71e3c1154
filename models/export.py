"""Export a FreezeLab setup: runnable Keras code, run config JSON, model and drift downloads.

Three things leave FreezeLab here, all as plain data the dashboard offers for download:

- `generate_code`: a standalone Keras script that rebuilds the same model (same layer names, so
  the same layer paths), applies the same freeze plan with the fewest `trainable` statements
  and trains with the same settings.
- `run_config` / `run_config_bytes`: a JSON description of a run (model, dataset, freeze plan,
  training settings, parameter counts). `parse_run_config` reads one back, strictly, and
  `plan_from_config` turns it into a freeze plan for the model in use.
- `model_file_bytes` and `drift_csv_bytes`: the trained model as `.keras` bytes and the drift
  records as CSV bytes; `base_model_file`: the pretrained base's file the script loads.

The script runs on the learner's machine: it names no path of the server. It loads a base
model file (the bundled CNN, an upload) from the folder it lies in, and says which file to
download from the Export tab when it is missing.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from models.applications import APPLICATION_ENTRIES
from models.bundled import BUNDLED_MODEL_PATH, FEATURE_EXTRACTOR_NAME
from models.datasets import BUNDLED_DATASETS
from models.layers import ImagenetPreprocessing, RGBToGrayscale
from models.names import display_name
from models.training import OPTIMIZERS, TrainingConfig
from models.transfer import build_transfer_model
from models.tree import LayerTree, ParameterCounts, format_paths
from models.workspace import TRANSFER_MODEL_NAME, ModelTemplate

FREEZELAB_VERSION = "0.1.0"
RUN_CONFIG_FORMAT = "freezelab-run-config"
RUN_CONFIG_FORMAT_VERSION = 1
MAX_RUN_CONFIG_BYTES = 2 * 1024 * 1024
MAX_CONFIG_PATHS = 100_000
MAX_PATH_LENGTH = 2_000
BUNDLED_MODEL_KEY = "bundled_digits_cnn"  # the same key as models.catalogue.BUNDLED_MODEL_KEY
KERAS_DATASET_KEYS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
_OPTIMIZER_CLASSES = {key: optimizer.__name__ for key, optimizer in OPTIMIZERS.items()}
_COMMENT_LIMIT = 160
BASE_MODEL_BUTTON = "Base model (.keras)"  # the Export tab's button for `base_model_file`


# ------------------------------------------------------------------------------ helpers
def _literal(text: str) -> str:
    """A double-quoted Python string literal for any text (untrusted names included)."""
    return json.dumps(str(text), ensure_ascii=True)


def _comment_text(text: Any) -> str:
    """Untrusted text made safe for one comment line: printable, one line, bounded."""
    cleaned = "".join(char if char.isprintable() else " " for char in str(text))
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > _COMMENT_LIMIT:
        cleaned = cleaned[: _COMMENT_LIMIT - 3] + "..."
    return cleaned


def _number(value: float) -> str:
    """A float literal that reads back to the same value (repr is the shortest exact form)."""
    return repr(float(value))


def _shape(shape: Iterable[Any]) -> str:
    items = [str(int(size)) for size in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _count_text(value: int) -> str:
    return f"{int(value):,}"


def _wrap_call(prefix: str, arguments: list[str], suffix: str = ")") -> list[str]:
    """`prefix` + arguments on one line when short, else one argument per line."""
    one_line = f"{prefix}{', '.join(arguments)}{suffix}"
    if len(one_line) <= 99:
        return [one_line]
    return [prefix.rstrip(), *[f"    {argument}," for argument in arguments], suffix]


def restrict_plan(frozen_paths: Iterable[str], tree: LayerTree) -> tuple[frozenset[str], list[str]]:
    """Keeps the paths of a freeze plan that exist in a model, and names the others.

    Args:
        frozen_paths: Paths to freeze, e.g. from a run config or a share link.
        tree: The `LayerTree` of the model the plan is for.

    Returns:
        `(plan, notices)`: the paths that exist in `tree`, and one notice naming the paths
        that do not (empty when all exist).

    Example:
    >>> plan, notices = restrict_plan(["transfer_model/feature_extractor", "nope"], tree)
    >>> sorted(plan), len(notices)
    (['transfer_model/feature_extractor'], 1)
    """
    if isinstance(frozen_paths, str):
        raise TypeError(
            f"frozen_paths must be a collection of layer paths; received the single string "
            f"{frozen_paths!r}. Wrap it in a list: [{frozen_paths!r}]."
        )
    wanted = {str(path) for path in frozen_paths}
    existing = set(tree.paths())
    plan = frozenset(wanted & existing)
    missing = sorted(wanted - existing)
    notices = []
    if missing:
        notices.append(
            f"{len(missing)} frozen layer path(s) do not exist in the current model and were "
            f"skipped: {format_paths(missing)}. The model has {len(existing)} layers; the rest "
            "of the plan was applied."
        )
    return plan, notices


# -------------------------------------------------------------------------- code: plan
def plan_counts(tree: LayerTree, frozen_paths: Iterable[str]) -> ParameterCounts:
    """The parameter counts a model would have with a freeze plan, without touching it.

    A weight trains when its own layer's flag is True and the top model's flag is True (see
    `models.tree`); state such as BatchNormalization's moving statistics never does.

    Args:
        tree: The model's `LayerTree`.
        frozen_paths: The plan: paths whose flag would be False.

    Returns:
        The `ParameterCounts` Keras would report after `tree.apply_frozen_paths(frozen_paths)`.

    Example:
    >>> plan_counts(tree, [tree.root_path]).trainable
    0
    """
    plan = set(frozen_paths)
    root_trainable = tree.root_path not in plan
    trainable = non_trainable = 0
    for node in tree.nodes():
        weights = node.own_params - node.own_state_params
        if root_trainable and node.path not in plan:
            trainable += weights
        else:
            non_trainable += weights
        non_trainable += node.own_state_params
    return ParameterCounts(trainable, non_trainable)


def _address(tree: LayerTree, path: str, base_path: str | None) -> str:
    """Python expression reaching the layer at `path` from `model` (or from `base`)."""
    if path == tree.root_path:
        return "model"
    if path == base_path:
        return "base"
    chain = [*reversed(tree.ancestors(path)), path]  # the root first, `path` last
    start, expression = 0, "model"
    if base_path in chain:
        start, expression = chain.index(base_path), "base"
    for parent_path, child_path in zip(chain[start:], chain[start + 1 :], strict=False):
        # The script names the base's input layer explicitly, so its name is stable.
        base_input = parent_path == base_path
        expression += _child_access(
            tree.layer(parent_path), tree.layer(child_path), base_input=base_input
        )
    return expression


def _child_access(
    parent: keras.layers.Layer, child: keras.layers.Layer, *, base_input: bool = False
) -> str:
    if isinstance(parent, keras.Model):
        layers = list(parent.layers)
        position = next(i for i, layer in enumerate(layers) if layer is child)
        same_name = sum(1 for layer in layers if layer.name == child.name)
        automatic = isinstance(child, keras.layers.InputLayer) and re.fullmatch(
            r"input_layer(_\d+)?", child.name
        )
        if (automatic and not base_input) or same_name > 1:
            # Automatic input names ("input_layer_3") differ between Python processes, and
            # duplicate names are ambiguous: use the position instead.
            return f".get_layer(index={position})"
        # The script loads the uploaded file, so it names layers as that file does.
        return f".get_layer({_literal(display_name(child.name))})"
    for attribute, value in vars(parent).items():
        if value is child and attribute.isidentifier():
            return f".{attribute}"
    raise ValueError(
        f"Cannot write code that reaches layer {child.name!r} inside {parent.name!r} "
        f"({type(parent).__name__}): it is neither in a model's layers nor an attribute. "
        "Freeze its parent instead."
    )


def freeze_statements(tree: LayerTree, frozen_paths: Iterable[str]) -> list[tuple[str, bool]]:
    """The fewest top-down `trainable` assignments that give a fresh model a freeze plan.

    Walks the tree in pre-order from an all-trainable model. Setting `trainable` on a layer
    sets it on everything under it, so a node needs a statement only when its wanted flag
    differs from the one its nearest assigned ancestor left it with: freeze a node whose
    parent is trainable, re-enable a node whose parent is frozen. Every statement changes
    the flag of every layer it reaches, so TensorFlow's skipping of unchanged assignments
    never matters.

    Args:
        tree: The model's `LayerTree`.
        frozen_paths: The plan: paths whose flag is `trainable=False`.

    Returns:
        `(path, trainable)` pairs in the order to apply them.

    Example:
    >>> freeze_statements(tree, tree.frozen_paths())
    [('transfer_model/feature_extractor', False)]
    """
    plan = set(frozen_paths)
    statements: list[tuple[str, bool]] = []
    flag: dict[str, bool] = {}
    for path in tree.paths():
        ancestors = tree.ancestors(path)
        inherited = flag[ancestors[0]] if ancestors else True
        wanted = path not in plan
        if wanted != inherited:
            statements.append((path, wanted))
        flag[path] = wanted
    return statements


# -------------------------------------------------------------------------- code: base
@dataclass(frozen=True)
class _CodeParts:
    imports: list[str]
    lines: list[str]


_PATH_IMPORT = "from pathlib import Path"


def _model_file_code(file_name: str, message: list[str], variable: str) -> list[str]:
    """Lines that load a `.keras` file lying next to the script, or explain how to get it.

    `message` is fixed text of ours, one fragment a line, with `{BASE_MODEL_FILE}` and
    `{SCRIPT_FOLDER}` placeholders filled in when the script runs (no quotes or other
    braces); the untrusted `file_name` is only ever written as an escaped literal.
    """
    fragments = ["The base model file {BASE_MODEL_PATH} is missing. ", *message]
    return [
        f"BASE_MODEL_FILE = {_literal(file_name)}",
        "# Looked for next to this script (in the current folder when run in a notebook).",
        'SCRIPT_FOLDER = Path(__file__).resolve().parent if "__file__" in globals() else '
        "Path.cwd()",
        "BASE_MODEL_PATH = SCRIPT_FOLDER / BASE_MODEL_FILE",
        "if not BASE_MODEL_PATH.is_file():",
        "    raise FileNotFoundError(",
        *[f'        {"f" if "{" in fragment else ""}"{fragment}"' for fragment in fragments],
        "    )",
        f"{variable} = keras.saving.load_model(BASE_MODEL_PATH, compile=False)",
    ]


def _base_code(template: ModelTemplate, base: keras.Model) -> _CodeParts:
    key = template.key
    name = _literal(base.name)
    if key == BUNDLED_MODEL_KEY:
        file_name = BUNDLED_MODEL_PATH.name
        return _CodeParts(
            [_PATH_IMPORT],
            [
                "# The pretrained base: the feature extractor of FreezeLab's bundled digits CNN",
                f"# (trained on digits 0-4). Download {file_name} with the",
                f'# "{BASE_MODEL_BUTTON}" button in FreezeLab\'s Export tab and put it next to',
                "# this script.",
                *_model_file_code(
                    file_name,
                    [
                        f"Download {{BASE_MODEL_FILE}} with the '{BASE_MODEL_BUTTON}' button "
                        "in FreezeLab's ",
                        "Export tab and put it in {SCRIPT_FOLDER}, next to this script.",
                    ],
                    "pretrained",
                ),
                f"base = pretrained.get_layer({_literal(FEATURE_EXTRACTOR_NAME)})",
            ],
        )
    catalogue, _, rest = key.partition("@")
    if catalogue in APPLICATION_ENTRIES and rest:
        entry = APPLICATION_ENTRIES[catalogue]
        input_shape = tuple(int(size) for size in base.input_shape[1:])
        input_name = base.layers[0].name if base.layers else "input_layer"
        weights = '"imagenet"' if template.pretrained else "None"
        weights_comment = (
            "# ImageNet weights: Keras downloads them once into ~/.keras/models."
            if template.pretrained
            else "# weights=None: random initialisation, as in FreezeLab (not pretrained)."
        )
        arguments = [
            f"input_shape={_shape(input_shape)}",
            f"input_tensor=keras.Input(shape={_shape(input_shape)}, name={_literal(input_name)})",
            "include_top=False",
            f"weights={weights}",
            *[f"{argument}={value!r}" for argument, value in entry.builder_arguments],
            f"name={name}",
        ]
        lines = [
            f"# The base: {_comment_text(entry.title)} from keras.applications, without its",
            "# ImageNet classifier (include_top=False). The input and model names are given so",
            "# the layer names match FreezeLab's.",
            weights_comment,
        ]
        if entry.imagenet_stddev_rescaling and template.pretrained:
            lines.append(
                "# Keras adds a Rescaling layer after Normalization for ImageNet weights "
                "(FreezeLab names it imagenet_stddev_rescaling)."
            )
        lines += _wrap_call(f"base = keras.applications.{entry.builder}(", arguments)
        return _CodeParts([], lines)
    if key.startswith("upload:"):
        _, file_name, cut_layer = key.split(":", 2)
        return _CodeParts(
            [_PATH_IMPORT],
            [
                f"# The base: your uploaded model {_comment_text(file_name)}. Put the file next "
                "to this script.",
                "# If it was saved from FreezeLab and uses FreezeLab's layers, run this script "
                "from the",
                "# FreezeLab folder and add: import models.layers",
                *_model_file_code(
                    file_name,
                    [
                        "It is the model file {BASE_MODEL_FILE} you uploaded to FreezeLab: ",
                        "copy it into {SCRIPT_FOLDER}, next to this script.",
                    ],
                    "uploaded",
                ),
                f"# Everything up to and including layer {_comment_text(cut_layer)} is the base;"
                " later layers are dropped.",
                *_wrap_call(
                    "base = keras.Model(",
                    [
                        "uploaded.inputs",
                        f"uploaded.get_layer({_literal(cut_layer)}).output",
                        f"name={name}",
                    ],
                ),
            ],
        )
    if key.startswith("dense_base:"):
        return _CodeParts([], _dense_base_code(base))
    raise ValueError(
        f"generate_code does not know how to rebuild the base of template {key!r}. Expected "
        f"the bundled model ({BUNDLED_MODEL_KEY!r}), a keras.applications key like "
        "'mobilenet_v2_035@96:random', an uploaded model ('upload:<file>:<layer>') or a "
        "Dense base ('dense_base:<features>')."
    )


def _dense_base_code(base: keras.Model) -> list[str]:
    lines = [
        "# The base: FreezeLab's Dense base for tabular data (random initialisation, not",
        "# pretrained). Its Normalization layer standardises the features with the table's",
        "# mean and variance.",
        "base = keras.Sequential(",
        "    [",
        f'        keras.Input(shape={_shape(base.input_shape[1:])}, name="features_input"),',
    ]
    for layer in base.layers:
        config = layer.get_config()
        name = _literal(layer.name)
        if isinstance(layer, keras.layers.Normalization):
            lines.append("        keras.layers.Normalization(")
            for argument in ("mean", "variance"):
                values = [_number(value) for value in config[argument]]
                lines += _list_lines(f"{argument}=", values, " " * 12, ",")
            lines.append(f"            name={name},")
            lines.append("        ),")
        elif isinstance(layer, keras.layers.Dense):
            bias = "" if config.get("use_bias", True) else ", use_bias=False"
            lines.append(f"        keras.layers.Dense({int(config['units'])}{bias}, name={name}),")
        elif isinstance(layer, keras.layers.BatchNormalization):
            lines.append(f"        keras.layers.BatchNormalization(name={name}),")
        elif isinstance(layer, keras.layers.ReLU):
            lines.append(f"        keras.layers.ReLU(name={name}),")
        else:
            raise ValueError(
                f"generate_code cannot write layer {layer.name!r} ({type(layer).__name__}) of "
                "the Dense base; expected Normalization, Dense, BatchNormalization or ReLU."
            )
    lines += ["    ],", f"    name={_literal(base.name)},", ")"]
    return lines


# ------------------------------------------------------------------------ code: model
def _model_code(model: keras.Model, base: keras.Model) -> _CodeParts:
    imports: list[str] = []
    lines = ["# The transfer model: input adaptation, the base as one nested layer, a new head."]
    for layer in model.layers:
        name = _literal(layer.name)
        config = layer.get_config()
        if isinstance(layer, keras.layers.InputLayer):
            shape = _shape(layer.batch_shape[1:])
            lines.append(f"inputs = keras.Input(shape={shape}, name={name})")
            lines.append("x = inputs")
        elif isinstance(layer, RGBToGrayscale):
            imports.append("from models.layers import RGBToGrayscale  # FreezeLab's layer")
            lines.append("# RGB -> one grayscale channel (FreezeLab's layer: run from its folder).")
            lines.append(f"x = RGBToGrayscale(name={name})(x)")
        elif isinstance(layer, keras.layers.Resizing):
            arguments = [str(int(config["height"])), str(int(config["width"]))]
            if config.get("interpolation", "bilinear") != "bilinear":
                arguments.append(f"interpolation={_literal(config['interpolation'])}")
            if config.get("antialias", False):
                lines.append("# Antialiased: every pixel counts when the images are made smaller.")
                arguments.append("antialias=True")
            lines.append(f"x = keras.layers.Resizing({', '.join(arguments)}, name={name})(x)")
        elif isinstance(layer, keras.layers.Concatenate):
            lines.append("# One grayscale channel -> three identical RGB channels.")
            lines.append(
                f"x = keras.layers.Concatenate(axis={int(config['axis'])}, name={name})([x, x, x])"
            )
        elif isinstance(layer, keras.layers.Rescaling):
            scale, offset = config["scale"], config["offset"]
            lines.append(
                f"x = keras.layers.Rescaling({_number(scale)}, {_number(offset)}, name={name})(x)"
            )
        elif isinstance(layer, ImagenetPreprocessing):
            lines += _preprocessing_code(layer, imports)
        elif layer is base:
            lines.append("x = base(x, training=False)")
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            lines.append(f"x = keras.layers.GlobalAveragePooling2D(name={name})(x)")
        elif isinstance(layer, keras.layers.Flatten):
            lines.append(f"x = keras.layers.Flatten(name={name})(x)")
        elif isinstance(layer, keras.layers.Dropout):
            lines.append(f"x = keras.layers.Dropout({_number(config['rate'])}, name={name})(x)")
        elif isinstance(layer, keras.layers.Dense):
            activation = _literal(config.get("activation", "linear"))
            lines.append(
                f"outputs = keras.layers.Dense({int(config['units'])}, activation={activation}, "
                f"name={name})(x)"
            )
        else:
            raise ValueError(
                f"generate_code cannot write layer {layer.name!r} ({type(layer).__name__}) of "
                f"model {model.name!r}: FreezeLab's transfer models use only input, resizing, "
                "channel, rescaling, preprocessing, base, pooling, dropout and Dense layers."
            )
    lines.append(f"model = keras.Model(inputs, outputs, name={_literal(model.name)})")
    return _CodeParts(imports, lines)


def _preprocessing_code(layer: ImagenetPreprocessing, imports: list[str]) -> list[str]:
    name = _literal(layer.name)
    if layer.mode == "tf":
        return [
            "# [0, 1] -> [-1, 1], as the family's preprocess_input does for [0, 255] images",
            "# (the same computation as FreezeLab's ImagenetPreprocessing('tf')).",
            f"x = keras.layers.Rescaling(2.0, -1.0, name={name})(x)",
        ]
    if layer.mode == "none":
        return [
            "# [0, 1] -> [0, 255]: this model normalises inside itself",
            "# (the same computation as FreezeLab's ImagenetPreprocessing('none')).",
            f"x = keras.layers.Rescaling(255.0, 0.0, name={name})(x)",
        ]
    imports.append("from models.layers import ImagenetPreprocessing  # FreezeLab's layer")
    return [
        f"# [0, 1] images -> what the family's preprocess_input({layer.mode!r}) makes of",
        "# [0, 255] images (FreezeLab's layer: run this script from the FreezeLab folder).",
        f"x = ImagenetPreprocessing({_literal(layer.mode)}, name={name})(x)",
    ]


# ------------------------------------------------------------------------- code: data
def _data_code(dataset_key: str | None, data_input_shape: tuple, num_classes: int) -> _CodeParts:
    if dataset_key in BUNDLED_DATASETS and dataset_key.startswith("digits_"):
        first, last = (int(part) for part in dataset_key.removeprefix("digits_").split("_"))
        digits = tuple(range(first, last + 1))
        return _CodeParts(
            ["import numpy as np", "from sklearn.datasets import load_digits"],
            [
                f"# Data: scikit-learn's 8x8 handwritten digits {first}-{last} (no download),",
                "# scaled to [0, 1], with labels 0..K-1 in digit order.",
                f"DIGITS = {digits!r}",
                "digits = load_digits()",
                "keep = np.isin(digits.target, DIGITS)",
                'x = (digits.images[keep] / 16.0).astype("float32").reshape(-1, 8, 8, 1)',
                "label_of_digit = {digit: label for label, digit in enumerate(DIGITS)}",
                "y = np.array([label_of_digit[digit] for digit in digits.target[keep]])",
            ],
        )
    if dataset_key == "shapes":
        return _CodeParts(
            ["from models.datasets import generate_shapes  # FreezeLab's generator"],
            [
                "# Data: FreezeLab's generated shapes (run this script from the FreezeLab folder).",
                "shapes = generate_shapes()",
                "x, y = shapes.x, shapes.y",
            ],
        )
    if dataset_key in KERAS_DATASET_KEYS:
        module = dataset_key
        channel = "[..., None]" if dataset_key != "cifar10" else ""
        return _CodeParts(
            [],
            [
                f"# Data: keras.datasets.{module} (Keras downloads it once). FreezeLab may have",
                "# used a stratified subset; slice x and y to train on fewer images.",
                f"(x, y), _ = keras.datasets.{module}.load_data()",
                f'x = (x.astype("float32") / 255.0){channel}',
                "y = y.reshape(-1)",
            ],
        )
    return _CodeParts(
        [],
        [
            "# Data: FreezeLab used your upload. Load it here as",
            f"#   x: float32 array of shape (num_samples, {', '.join(map(str, data_input_shape))})"
            + (", values in [0, 1]" if len(data_input_shape) == 3 else ""),
            f"#   y: integer labels 0..{num_classes - 1} of shape (num_samples,)",
            "x, y = ...  # replace with your arrays",
        ],
    )


def _training_code(config: TrainingConfig) -> _CodeParts:
    optimizer = f"keras.optimizers.{_OPTIMIZER_CLASSES[config.optimizer]}"
    lines = [
        "# Compile AFTER setting the flags: Keras reads them when it compiles.",
        f"keras.utils.set_random_seed({int(config.seed)})",
    ]
    imports: list[str] = []
    if config.validation_fraction > 0:
        imports.append("from sklearn.model_selection import train_test_split")
        lines += [
            "# A stratified split, as FreezeLab makes it.",
            *_wrap_call(
                "x_train, x_validation, y_train, y_validation = train_test_split(",
                [
                    "x",
                    "y",
                    f"test_size={_number(config.validation_fraction)}",
                    f"random_state={int(config.seed)}",
                    "stratify=y",
                ],
            ),
            "validation_data = (x_validation, y_validation)",
        ]
    else:
        lines += ["x_train, y_train = x, y", "validation_data = None"]
    lines += [
        "model.compile(",
        f"    optimizer={optimizer}(learning_rate={_number(config.learning_rate)}),",
        '    loss="sparse_categorical_crossentropy",',
        '    metrics=["accuracy"],',
        ")",
        "history = model.fit(",
        "    x_train,",
        "    y_train,",
        "    validation_data=validation_data,",
        f"    epochs={int(config.epochs)},",
        f"    batch_size={int(config.batch_size)},",
        "    shuffle=True,",
        ")",
        "print({key: values[-1] for key, values in history.history.items()})",
    ]
    return _CodeParts(imports, lines)


def generate_code(
    template: ModelTemplate,
    data_input_shape: tuple,
    num_classes: int,
    frozen_paths: Iterable[str],
    config: TrainingConfig,
    *,
    dataset_key: str | None = None,
    tree: LayerTree | None = None,
    include_training: bool = True,
) -> str:
    """Writes a standalone Keras script that rebuilds a FreezeLab setup and trains it.

    The script builds the same model as FreezeLab (`build_transfer_model` of the template's
    base, with the same layer names, so the same layer paths and parameter counts), applies
    the freeze plan with the fewest top-down `trainable` statements (`freeze_statements`),
    prints the trainable and non-trainable parameter counts, and, with `include_training`,
    loads the data, compiles with a fresh optimizer and fits with the same settings. Names
    from uploads are written as escaped string literals and one-line comments only.

    The script runs on the learner's machine and holds no path of this one: a base that
    comes from a file (the bundled CNN, an uploaded model) is loaded from the script's own
    folder, and a missing file raises a `FileNotFoundError` that names the file and says
    where to get it (`base_model_file` gives the bundled one for the Export tab).

    Args:
        template: The base model's template (bundled, keras.applications, uploaded or the
            Dense base).
        data_input_shape: Shape of one sample, e.g. `(8, 8, 1)`.
        num_classes: Number of classes of the head.
        frozen_paths: The freeze plan (paths of the model whose flag is False).
        config: The training settings.
        dataset_key: The dataset's key ("digits_5_9", "shapes", "mnist"...) for the data
            loading code; None or another key writes a placeholder for the user's data.
        tree: The `LayerTree` of the user's FreezeLab model (built for `template` and the
            data). None builds the model here (slower for large bases).
        include_training: False leaves out data loading, compile and fit (the script then
            only builds and freezes the model; tests execute it this way).

    Returns:
        The Python source, PEP 8 formatted, ending with a newline.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: When the plan names paths the model does not have, or the template's
            kind cannot be written as code.

    Example:
    >>> code = generate_code(template, (8, 8, 1), 5, workspace.tree.frozen_paths(),
    ...                      TrainingConfig(), dataset_key="digits_5_9", tree=workspace.tree)
    >>> compile(code, "freezelab_export.py", "exec") is not None
    True
    """
    if not isinstance(template, ModelTemplate):
        raise TypeError(
            f"template must be a ModelTemplate (e.g. workspace.template); received "
            f"{type(template).__name__}."
        )
    if not isinstance(config, TrainingConfig):
        raise TypeError(
            f"config must be a TrainingConfig; received {type(config).__name__}. Build one "
            "with TrainingConfig(epochs=..., learning_rate=...)."
        )
    if isinstance(frozen_paths, str):
        raise TypeError(
            f"frozen_paths must be a collection of layer paths; received the single string "
            f"{frozen_paths!r}. Wrap it in a list."
        )
    if tree is None:
        # A copy of the config: Keras's Functional.from_config empties the dict it is given.
        private = dataclasses.replace(template, config=copy.deepcopy(template.config))
        model = build_transfer_model(
            private.instantiate(),
            tuple(data_input_shape),
            num_classes,
            rescaling=template.rescaling,
            preprocessing=template.preprocessing,
            name=TRANSFER_MODEL_NAME,
        )
        tree = LayerTree(model)
    elif not isinstance(tree, LayerTree):
        raise TypeError(f"tree must be a LayerTree or None; received {type(tree).__name__}.")
    model = tree.model
    plan = {str(path) for path in frozen_paths}
    unknown = sorted(plan - set(tree.paths()))
    if unknown:
        raise ValueError(
            f"The freeze plan names {len(unknown)} path(s) that are not in model "
            f"{model.name!r}: {unknown[:5]}. Pass the plan of this model (tree.frozen_paths())."
        )
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(
            f"generate_code expects a FreezeLab transfer model with exactly one nested base "
            f"model; {model.name!r} has {len(nested)}. Build it with build_transfer_model."
        )
    base = nested[0]
    base_path = tree.path_of(base)

    # What the FreezeLab model reports once the plan is applied, for the script's comments.
    counts = plan_counts(tree, plan)

    base_parts = _base_code(template, base)
    model_parts = _model_code(model, base)
    parts = [base_parts, model_parts]
    data_parts = training_parts = None
    if include_training:
        data_parts = _data_code(dataset_key, tuple(data_input_shape), int(num_classes))
        training_parts = _training_code(config)
        parts += [data_parts, training_parts]

    wanted = {line for part in parts for line in part.imports}
    standard = ["import math", *sorted(line for line in wanted if line == _PATH_IMPORT)]
    third_party = sorted(line for line in wanted if "models." not in line and line != _PATH_IMPORT)
    freezelab = sorted(line for line in wanted if "models." in line)
    numpy_imports = [line for line in third_party if line.startswith("import ")]
    from_imports = [line for line in third_party if line.startswith("from ")]
    imports = [*standard, "", "import keras", *numpy_imports, *from_imports]
    if freezelab:
        imports += ["", *freezelab]

    title = _comment_text(template.title)
    plan_lines = _plan_code(tree, plan, base_path)
    header = [
        '"""Rebuilds a FreezeLab setup in plain Keras: model, freeze plan and training settings.',
        "",
        f"Model: {title}",
        f"Data: {_comment_text(dataset_key or 'your data')}, input shape "
        f"{tuple(int(size) for size in data_input_shape)}, {int(num_classes)} classes",
        f"Settings: {config.epochs} epochs, batch size {config.batch_size}, learning rate "
        f"{config.learning_rate:g}, optimizer {config.optimizer}, validation "
        f"{config.validation_fraction:g}",
        f"Written by FreezeLab {FREEZELAB_VERSION} with Keras {keras.__version__}.",
        '"""',
        "",
    ]
    body = [
        *imports,
        "",
        "# The same seed as FreezeLab's model building; new weights still differ from FreezeLab's",
        "# (different random draws), the structure, names and counts are the same.",
        "keras.utils.set_random_seed(0)",
        "",
        *base_parts.lines,
        "",
        *model_parts.lines,
        "",
        *plan_lines,
        "",
        "# Parameter counts, as Keras's model.summary() reports them.",
        "trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)",
        "non_trainable = sum(math.prod(weight.shape) for weight in model.non_trainable_weights)",
        f'print(f"Trainable: {{trainable:,}} (FreezeLab: {_count_text(counts.trainable)})")',
        f'print(f"Non-trainable: {{non_trainable:,}} (FreezeLab: '
        f'{_count_text(counts.non_trainable)})")',
    ]
    if data_parts is not None and training_parts is not None:
        body += ["", *data_parts.lines, "", *training_parts.lines]
    return "\n".join(header + body) + "\n"


_NAMED_ACCESS = re.compile(r'^(?P<parent>.+)\.get_layer\((?P<name>"(?:[^"\\]|\\.)*")\)$')
_MIN_LOOP = 4


def _list_lines(prefix: str, items: list[str], indent: str, suffix: str) -> list[str]:
    """A list literal as ruff/black format it: one line when it fits, else one item a line."""
    one_line = f"{indent}{prefix}[{', '.join(items)}]{suffix}"
    if len(one_line) <= 100:
        return [one_line]
    return [f"{indent}{prefix}[", *[f"{indent}    {item}," for item in items], f"{indent}]{suffix}"]


def _plan_code(tree: LayerTree, plan: set[str], base_path: str) -> list[str]:
    statements = freeze_statements(tree, plan)
    if not statements:
        return ["# Freeze plan: nothing is frozen, every layer trains."]
    lines = [
        f"# Freeze plan: {len(plan)} frozen layer(s), set with {len(statements)} statement(s).",
        "# Setting `trainable` on a layer sets it on every layer inside it, so the statements",
        "# go top-down: freeze a layer, then re-enable the children that should train.",
    ]
    rows = []
    for path, trainable in statements:
        target = _address(tree, path, base_path)
        match = _NAMED_ACCESS.match(target)
        key = (match.group("parent"), trainable) if match else None
        rows.append((target, trainable, key, match.group("name") if match else None))
    index = 0
    while index < len(rows):
        target, trainable, key, _ = rows[index]
        end = index + 1
        while key is not None and end < len(rows) and rows[end][2] == key:
            end += 1
        if end - index >= _MIN_LOOP:
            parent = key[0]
            names = [row[3] for row in rows[index:end]]
            lines.append(f"# {end - index} consecutive layers of {parent}, in model order.")
            lines += _list_lines("for name in ", names, "", ":")
            lines.append(f"    {parent}.get_layer(name).trainable = {trainable}")
            index = end
            continue
        statement = f"{target}.trainable = {trainable}"
        comment = "  # re-enabled inside a frozen parent" if trainable else ""
        if len(statement) > 99:
            lines += [f"layer = {target}", f"layer.trainable = {trainable}"]
        else:
            lines.append(statement if len(statement + comment) > 99 else statement + comment)
        index += 1
    return lines


# ------------------------------------------------------------------------ run config
@dataclass(frozen=True)
class RunConfig:
    """A run's description read back from its JSON (see `run_config`).

    Attributes:
        freezelab_version: The FreezeLab version that wrote it.
        keras_version: The Keras version that wrote it.
        created_at: When it was written (ISO 8601, UTC).
        run_id: The run's number in its session, or None for a plan without a run.
        template_key: The model's template key, e.g. "mobilenet_v2_035@96:random".
        template_title: The model's title.
        pretrained: Whether the base held learned weights.
        dataset_key: The dataset's key, e.g. "digits_5_9".
        dataset_title: The dataset's title.
        frozen_paths: The freeze plan, sorted.
        training: The training settings.
        counts: Trainable / non-trainable parameters with the plan, or None.
    """

    freezelab_version: str
    keras_version: str
    created_at: str
    run_id: int | None
    template_key: str
    template_title: str
    pretrained: bool
    dataset_key: str
    dataset_title: str
    frozen_paths: tuple[str, ...]
    training: TrainingConfig
    counts: ParameterCounts | None

    @property
    def catalogue_key(self) -> str:
        """The catalogue key of the model ("resnet50@96:imagenet" -> "resnet50")."""
        return self.template_key.split("@", 1)[0]

    @property
    def input_size(self) -> int | None:
        """The keras.applications input size from the template key, or None."""
        match = re.fullmatch(r"[^@]+@(\d+):\w+", self.template_key)
        return int(match.group(1)) if match else None


def run_config(
    template: ModelTemplate,
    dataset_key: str,
    dataset_title: str,
    frozen_paths: Iterable[str],
    config: TrainingConfig,
    counts: ParameterCounts | None = None,
    *,
    run_id: int | None = None,
    created_at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Describes a run (or the current plan) as a JSON-ready dict.

    Args:
        template: The model's template (`workspace.template`).
        dataset_key: The dataset's key (`workspace.dataset.name`).
        dataset_title: The dataset's title.
        frozen_paths: The freeze plan (`run.frozen_paths` or `tree.frozen_paths()`).
        config: The training settings (`run.config`).
        counts: Parameter counts with the plan (`run.counts`), or None.
        run_id: The run's number, or None for a plan that has not run.
        created_at: When; None for now (UTC).

    Returns:
        A dict with "format", "format_version", "freezelab_version", "keras_version",
        "created_at", "run_id", "model" {key, title, pretrained}, "dataset" {key, title},
        "frozen_paths" (sorted list), "training" (TrainingConfig fields) and "counts"
        {trainable, non_trainable} or None.

    Example:
    >>> data = run_config(workspace.template, "digits_5_9", "Digits 5-9",
    ...                   run.frozen_paths, run.config, run.counts, run_id=run.run_id)
    >>> parse_run_config(run_config_bytes(data)).training == run.config
    True
    """
    if not isinstance(template, ModelTemplate):
        raise TypeError(f"template must be a ModelTemplate; received {type(template).__name__}.")
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig; received {type(config).__name__}.")
    if isinstance(frozen_paths, str):
        raise TypeError(
            f"frozen_paths must be a collection of paths; received the string {frozen_paths!r}."
        )
    moment = created_at or datetime.datetime.now(datetime.UTC)
    return {
        "format": RUN_CONFIG_FORMAT,
        "format_version": RUN_CONFIG_FORMAT_VERSION,
        "freezelab_version": FREEZELAB_VERSION,
        "keras_version": keras.__version__,
        "created_at": moment.isoformat(timespec="seconds"),
        "run_id": None if run_id is None else int(run_id),
        "model": {
            "key": template.key,
            "title": template.title,
            "pretrained": bool(template.pretrained),
        },
        "dataset": {"key": str(dataset_key), "title": str(dataset_title)},
        "frozen_paths": sorted(str(path) for path in frozen_paths),
        "training": config.to_dict(),
        "counts": None
        if counts is None
        else {"trainable": int(counts.trainable), "non_trainable": int(counts.non_trainable)},
    }


def run_config_bytes(config: Mapping[str, Any]) -> bytes:
    """Serialises a `run_config` dict as indented UTF-8 JSON, for a download button.

    Example:
    >>> run_config_bytes(run_config(...))[:1]
    b'{'
    """
    return (json.dumps(dict(config), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require(data: Mapping[str, Any], key: str, kinds: type | tuple, where: str) -> Any:
    if key not in data:
        raise ValueError(f"The run config has no {where}{key!r}; a FreezeLab run config has it.")
    value = data[key]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    wrong_bool = isinstance(value, bool) and bool not in allowed  # JSON true is not a number
    if wrong_bool or not isinstance(value, allowed):
        expected = " or ".join(kind.__name__ for kind in allowed)
        raise ValueError(
            f"The run config's {where}{key!r} must be {expected.replace('NoneType', 'null')}; "
            f"received {_type_name(value)} {value!r:.80}."
        )
    return value


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"The run config has unknown key(s) {unknown} in {where}; expected only "
            f"{sorted(allowed)}. Was it written by another tool or edited by hand?"
        )


def parse_run_config(data: bytes | str) -> RunConfig:
    """Reads a run config JSON (as written by `run_config_bytes`) strictly.

    Args:
        data: The uploaded file's bytes (UTF-8 JSON) or text.

    Returns:
        A `RunConfig`.

    Raises:
        TypeError: When `data` is neither bytes nor text.
        ValueError: For a file that is too large, not UTF-8, not JSON, not a FreezeLab run
            config, has unknown keys, values of the wrong type or invalid training settings;
            the message names the key, what was received and what is expected.

    Example:
    >>> parse_run_config(run_config_bytes(run_config(...))).frozen_paths
    ('transfer_model/feature_extractor',)
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes | str):
        raise TypeError(
            f"parse_run_config expects the file's bytes or text; received {type(data).__name__}."
        )
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    if size > MAX_RUN_CONFIG_BYTES:
        raise ValueError(
            f"The run config is {size:,} bytes; the limit is {MAX_RUN_CONFIG_BYTES:,}. Upload "
            "the JSON file FreezeLab wrote (a few kilobytes)."
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"The run config is not UTF-8 text ({error}); upload the .json file FreezeLab "
                "wrote, not a model or an image."
            ) from None
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ValueError(
            f"The run config is not valid JSON ({error}). Upload the .json file FreezeLab wrote "
            "with 'Download run config'."
        ) from None
    if not isinstance(document, dict):
        raise ValueError(
            f"The run config must be a JSON object {{...}}; received a JSON "
            f"{_type_name(document)}. Upload the .json file FreezeLab wrote."
        )
    if document.get("format") != RUN_CONFIG_FORMAT:
        raise ValueError(
            f"This JSON is not a FreezeLab run config: its 'format' is "
            f"{document.get('format')!r:.80}, expected {RUN_CONFIG_FORMAT!r}."
        )
    version = _require(document, "format_version", int, "")
    if version != RUN_CONFIG_FORMAT_VERSION:
        raise ValueError(
            f"The run config has format_version {version}; this FreezeLab reads version "
            f"{RUN_CONFIG_FORMAT_VERSION}. Export it again from this FreezeLab."
        )
    _check_keys(
        document,
        (
            "format",
            "format_version",
            "freezelab_version",
            "keras_version",
            "created_at",
            "run_id",
            "model",
            "dataset",
            "frozen_paths",
            "training",
            "counts",
        ),
        "the top level",
    )
    run_id = _require(document, "run_id", (int, type(None)), "")
    model = _require(document, "model", dict, "")
    _check_keys(model, ("key", "title", "pretrained"), "'model'")
    dataset = _require(document, "dataset", dict, "")
    _check_keys(dataset, ("key", "title"), "'dataset'")
    paths = _require(document, "frozen_paths", list, "")
    if len(paths) > MAX_CONFIG_PATHS:
        raise ValueError(
            f"The run config lists {len(paths):,} frozen paths; at most {MAX_CONFIG_PATHS:,} "
            "are accepted."
        )
    for index, path in enumerate(paths):
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
            raise ValueError(
                f"frozen_paths[{index}] must be a non-empty layer path of at most "
                f"{MAX_PATH_LENGTH} characters such as 'transfer_model/feature_extractor'; "
                f"received {_type_name(path)} {path!r:.80}."
            )
    training = _require(document, "training", dict, "")
    field_names = [field.name for field in fields(TrainingConfig)]
    _check_keys(training, field_names, "'training'")
    try:
        training_config = TrainingConfig(**training)
    except (TypeError, ValueError) as error:
        raise ValueError(f"The run config's training settings are invalid: {error}") from None
    counts_data = _require(document, "counts", (dict, type(None)), "")
    counts = None
    if counts_data is not None:
        _check_keys(counts_data, ("trainable", "non_trainable"), "'counts'")
        trainable = _require(counts_data, "trainable", int, "counts.")
        non_trainable = _require(counts_data, "non_trainable", int, "counts.")
        if trainable < 0 or non_trainable < 0:
            raise ValueError(
                f"The run config's counts must be >= 0; received trainable={trainable}, "
                f"non_trainable={non_trainable}."
            )
        counts = ParameterCounts(trainable, non_trainable)
    return RunConfig(
        freezelab_version=_require(document, "freezelab_version", str, ""),
        keras_version=_require(document, "keras_version", str, ""),
        created_at=_require(document, "created_at", str, ""),
        run_id=run_id,
        template_key=_require(model, "key", str, "model."),
        template_title=_require(model, "title", str, "model."),
        pretrained=_require(model, "pretrained", bool, "model."),
        dataset_key=_require(dataset, "key", str, "dataset."),
        dataset_title=_require(dataset, "title", str, "dataset."),
        frozen_paths=tuple(sorted(set(paths))),
        training=training_config,
        counts=counts,
    )


def plan_from_config(
    config: RunConfig, tree: LayerTree, *, template_key: str | None = None
) -> tuple[frozenset[str], list[str]]:
    """The freeze plan of a run config, restricted to the layers of the current model.

    Args:
        config: A parsed `RunConfig`.
        tree: The `LayerTree` of the model to apply the plan to.
        template_key: The current model's template key; when it differs from the config's,
            a notice says the plan was made for another model.

    Returns:
        `(plan, notices)`: the paths to freeze (all in `tree`), and notices about the model
        mismatch and the paths that do not exist (empty when everything matched).

    Example:
    >>> plan, notices = plan_from_config(parse_run_config(data), workspace.tree,
    ...                                  template_key=workspace.template.key)
    >>> workspace.apply_plan(plan)
    """
    if not isinstance(config, RunConfig):
        raise TypeError(
            f"config must be a RunConfig from parse_run_config; received {type(config).__name__}."
        )
    notices = []
    if template_key is not None and template_key != config.template_key:
        notices.append(
            f"The config was made for model {config.template_title!r} ({config.template_key}); "
            f"the current model is {template_key}. Only the layer paths both share were applied."
        )
    plan, missing = restrict_plan(config.frozen_paths, tree)
    return plan, notices + missing


# --------------------------------------------------------------------------- downloads
def model_file_bytes(model: keras.Model) -> bytes:
    """Saves a model as a `.keras` file and returns its bytes (for a download button).

    Call it only while the model is not training (e.g. after the run finished).

    Args:
        model: A Keras model.

    Returns:
        The bytes of `model.save("model.keras")`; `keras.saving.load_model` reads them back
        (FreezeLab's own layers need `import models.layers` first).

    Example:
    >>> data = model_file_bytes(workspace.model)
    >>> data[:2]
    b'PK'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model_file_bytes expects a keras.Model (e.g. workspace.model); received "
            f"{type(model).__name__}."
        )
    with tempfile.TemporaryDirectory(prefix="freezelab_export_") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def base_model_file(template: ModelTemplate) -> Path | None:
    """The pretrained base's file that the exported script loads, for a download button.

    The script of the bundled model loads `bundled_digits_cnn.keras` from its own folder;
    the Export tab offers this file under `BASE_MODEL_BUTTON`. Other bases need no file
    from FreezeLab: keras.applications builds them (and downloads ImageNet weights itself),
    the Dense base is written out in the script, and an uploaded model is the learner's own.

    Args:
        template: The model's template (`workspace.template`).

    Returns:
        The path of the file to offer (its name is the one the script expects), or None.

    Example:
    >>> base_model_file(bundled_template()).name
    'bundled_digits_cnn.keras'
    """
    if not isinstance(template, ModelTemplate):
        raise TypeError(
            f"template must be a ModelTemplate (e.g. workspace.template); received "
            f"{type(template).__name__}."
        )
    return BUNDLED_MODEL_PATH if template.key == BUNDLED_MODEL_KEY else None


def drift_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The drift records as UTF-8 CSV bytes (floats written exactly), for a download button.

    Args:
        frame: A drift DataFrame (`run.job.drift_frame()`).

    Returns:
        CSV bytes with a header row and no index column.

    Example:
    >>> drift_csv_bytes(run.job.drift_frame()).splitlines()[0]
    b'step,epoch,layer_path,layer_name,class_name,kind,relative_change,...'
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"drift_csv_bytes expects a pandas DataFrame (run.job.drift_frame()); received "
            f"{type(frame).__name__}."
        )
    return frame.to_csv(index=False).encode("utf-8")


def download_file_name(kind: str, run_id: int | None = None) -> str:
    """A file name for a download: "freezelab_run3_model.keras", "freezelab_plan_code.py"...

    Args:
        kind: "model" (.keras), "drift" (.csv), "config" (.json) or "code" (.py).
        run_id: The run's number, or None for the current plan.

    Returns:
        The file name.

    Example:
    >>> download_file_name("drift", 3)
    'freezelab_run3_drift.csv'
    """
    extensions = {"model": ".keras", "drift": ".csv", "config": ".json", "code": ".py"}
    if kind not in extensions:
        raise ValueError(f"Unknown download kind {kind!r}; expected one of {sorted(extensions)}.")
    stem = "plan" if run_id is None else f"run{int(run_id)}"
    return f"freezelab_{stem}_{kind}{extensions[kind]}"


__all__ = [
    "BASE_MODEL_BUTTON",
    "FREEZELAB_VERSION",
    "RunConfig",
    "base_model_file",
    "download_file_name",
    "drift_csv_bytes",
    "freeze_statements",
    "generate_code",
    "model_file_bytes",
    "parse_run_config",
    "plan_counts",
    "plan_from_config",
    "restrict_plan",
    "run_config",
    "run_config_bytes",
]
