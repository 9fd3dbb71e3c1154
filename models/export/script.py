"""Writes the standalone Keras script that rebuilds a FreezeLab setup, freezes it and trains it.

`generate_code` writes a script that rebuilds the same model (same layer names, so the same
layer paths), applies the same freeze plan with the fewest `trainable` statements, puts the
same LoRA adapters on with Keras's `enable_lora` (`lora_code`) and trains with the same
settings, per-layer learning rates included (`rates_code`). The script runs on the learner's
machine: it names no path of the server. It loads a base model file (the bundled CNN, an
upload) from the folder it lies in, and says which file to download from the Export tab when
it is missing.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable

import keras

from models.datasets import BUNDLED_DATASETS
from models.export.base_code import base_code
from models.export.config_json import FREEZELAB_VERSION
from models.export.lora_code import lora_adapters, lora_lines
from models.export.plan_code import plan_counts, plan_lines
from models.export.rates_code import (
    optimizer_class_lines,
    optimizer_class_name,
    rate_multipliers,
    rates_lines,
)
from models.export.source import (
    PATH_IMPORT,
    CodeParts,
    comment_text,
    count_text,
    literal,
    number,
    shape_text,
    wrap_call,
)
from models.layers import ImagenetPreprocessing, RGBToGrayscale, Uint8Rescaling
from models.template import ModelTemplate
from models.training import OPTIMIZERS, TrainingConfig
from models.transfer import TRANSFER_MODEL_NAME, build_transfer_model
from models.tree import LayerTree, ParameterCounts

KERAS_DATASET_KEYS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
_OPTIMIZER_CLASSES = {key: optimizer.__name__ for key, optimizer in OPTIMIZERS.items()}


# ------------------------------------------------------------------------ the script
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
    input_dtype: str = "float32",
) -> str:
    """Writes a standalone Keras script that rebuilds a FreezeLab setup and trains it.

    The script builds the same model as FreezeLab (`build_transfer_model` of the template's
    base, with the same layer names, so the same layer paths and parameter counts), applies
    the freeze plan with the fewest top-down `trainable` statements (`freeze_statements`),
    then puts the LoRA adapters of `tree`'s model on the same layers with Keras's
    `layer.enable_lora(rank, lora_alpha=alpha)` (after the plan: see `models.export.lora_code`),
    prints the trainable and non-trainable parameter counts, and, with `include_training`,
    loads the data, compiles with a fresh optimizer and fits with the same settings. With
    `config.layer_rates` the optimizer is a small subclass of the chosen Keras optimizer,
    written into the script, that scales each weight's learning rate by FreezeLab's multiplier
    for it (bitwise FreezeLab's updates, see `models.export.rates_code`). Names from uploads
    are written as escaped string literals and one-line comments only.

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
            data); its LoRA adapters are written too. None builds the model here, without
            adapters (slower for large bases).
        include_training: False leaves out data loading, compile and fit (the script then
            only builds and freezes the model; tests execute it this way).
        input_dtype: The images' dtype when `tree` is None: "float32" ([0, 1]) or "uint8"
            (pixels 0..255, as uploads are stored; the script's model then takes uint8 and
            scales each batch). With a `tree`, its model's input says it.

    Returns:
        The Python source, PEP 8 formatted, ending with a newline.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: When the plan or `config.layer_rates` names paths the model does not
            have, or the template's kind cannot be written as code.

    Example:
    >>> code = generate_code(template, (8, 8, 1), 5, workspace.tree.frozen_paths(),
    ...                      TrainingConfig(), dataset_key="digits_5_9", tree=workspace.tree)
    >>> compile(code, "freezelab_export.py", "exec") is not None
    True
    """
    _check_arguments(template, frozen_paths, config)
    tree = _tree_for(template, data_input_shape, num_classes, tree, input_dtype)
    plan = {str(path) for path in frozen_paths}
    base = _nested_base(tree, plan)
    base_parts = base_code(template, base)
    model_parts = _model_code(tree.model, base)
    training_parts = []
    if include_training:
        pixels = keras.backend.standardize_dtype(tree.model.inputs[0].dtype) == "uint8"
        training_parts = [
            _data_code(dataset_key, tuple(data_input_shape), int(num_classes), pixels),
            _training_code(config, rate_multipliers(config, tree)),
        ]
    base_path = tree.path_of(base)
    adapter_lines = lora_lines(tree, base_path)
    body = [
        *_import_lines([base_parts, model_parts, *training_parts]),
        "",
        "# The same seed as FreezeLab's model building; new weights still differ from FreezeLab's",
        "# (different random draws), the structure, names and counts are the same.",
        "keras.utils.set_random_seed(0)",
        "",
        *base_parts.lines,
        "",
        *model_parts.lines,
        "",
        *plan_lines(tree, plan, base_path),
        "",
        *([*adapter_lines, ""] if adapter_lines else []),
        # What the FreezeLab model reports once the plan is applied, for the script's comments.
        *_count_lines(plan_counts(tree, plan)),
    ]
    for part in training_parts:
        body += ["", *part.lines]
    header = _header_lines(template, data_input_shape, num_classes, config, dataset_key, tree)
    return "\n".join(header + body) + "\n"


def _check_arguments(
    template: ModelTemplate, frozen_paths: Iterable[str], config: TrainingConfig
) -> None:
    """Raises `TypeError` for a template, plan or settings of the wrong type."""
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


def _tree_for(
    template: ModelTemplate,
    data_input_shape: tuple,
    num_classes: int,
    tree: LayerTree | None,
    input_dtype: str,
) -> LayerTree:
    """The given tree, or the tree of a transfer model built here when it is None."""
    if tree is None:
        # A copy of the config: Keras's Functional.from_config empties the dict it is given.
        private = dataclasses.replace(template, config=copy.deepcopy(template.config))
        model = build_transfer_model(
            private.instantiate(),
            tuple(data_input_shape),
            num_classes,
            rescaling=template.rescaling,
            preprocessing=template.preprocessing,
            input_dtype=input_dtype,
            name=TRANSFER_MODEL_NAME,
        )
        return LayerTree(model)
    if not isinstance(tree, LayerTree):
        raise TypeError(f"tree must be a LayerTree or None; received {type(tree).__name__}.")
    return tree


def _nested_base(tree: LayerTree, plan: set[str]) -> keras.Model:
    """The transfer model's one nested base, once the plan is known to fit the model."""
    model = tree.model
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
    return nested[0]


def _import_lines(parts: list[CodeParts]) -> list[str]:
    """The script's imports in isort's order: standard library, third party, FreezeLab."""
    wanted = {line for part in parts for line in part.imports}
    standard = ["import math", *sorted(line for line in wanted if line == PATH_IMPORT)]
    third_party = sorted(line for line in wanted if "models." not in line and line != PATH_IMPORT)
    freezelab = sorted(line for line in wanted if "models." in line)
    numpy_imports = [line for line in third_party if line.startswith("import ")]
    from_imports = [line for line in third_party if line.startswith("from ")]
    imports = [*standard, "", "import keras", *numpy_imports, *from_imports]
    if freezelab:
        imports += ["", *freezelab]
    return imports


def _header_lines(
    template: ModelTemplate,
    data_input_shape: tuple,
    num_classes: int,
    config: TrainingConfig,
    dataset_key: str | None,
    tree: LayerTree,
) -> list[str]:
    """The script's docstring: model, data, settings and the versions that wrote it."""
    extras = []
    adapters = lora_adapters(tree)
    if adapters:
        extras.append(f"LoRA: {len(adapters)} adapter(s), Keras's enable_lora")
    if config.layer_rates is not None:
        extras.append(comment_text(config.layer_rates))
    return [
        '"""Rebuilds a FreezeLab setup in plain Keras: model, freeze plan and training settings.',
        "",
        f"Model: {comment_text(template.title)}",
        f"Data: {comment_text(dataset_key or 'your data')}, input shape "
        f"{tuple(int(size) for size in data_input_shape)}, {int(num_classes)} classes",
        f"Settings: {config.epochs} epochs, batch size {config.batch_size}, learning rate "
        f"{config.learning_rate:g}, optimizer {config.optimizer}, validation "
        f"{config.validation_fraction:g}",
        *extras,
        f"Written by FreezeLab {FREEZELAB_VERSION} with Keras {keras.__version__}.",
        '"""',
        "",
    ]


def _count_lines(counts: ParameterCounts) -> list[str]:
    """Lines that print the script's parameter counts next to FreezeLab's."""
    return [
        "# Parameter counts, as Keras's model.summary() reports them.",
        "trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)",
        "non_trainable = sum(math.prod(weight.shape) for weight in model.non_trainable_weights)",
        f'print(f"Trainable: {{trainable:,}} (FreezeLab: {count_text(counts.trainable)})")',
        f'print(f"Non-trainable: {{non_trainable:,}} (FreezeLab: '
        f'{count_text(counts.non_trainable)})")',
    ]


# ------------------------------------------------------------------------- the model
def _model_code(model: keras.Model, base: keras.Model) -> CodeParts:
    """The transfer model around `base`, layer by layer in model order."""
    imports: list[str] = []
    lines = ["# The transfer model: input adaptation, the base as one nested layer, a new head."]
    for layer in model.layers:
        if layer is base:
            lines.append(
                "# No `training=False` here: what it does during fit differs between Keras "
                "versions\n# (keras-team/keras#23364); frozen BatchNormalization layers run in "
                "inference mode anyway."
            )
            lines.append("x = base(x)")
            continue
        layer_lines = _adaptation_code(layer, imports) or _head_code(layer)
        if layer_lines is None:
            raise ValueError(
                f"generate_code cannot write layer {layer.name!r} ({type(layer).__name__}) of "
                f"model {model.name!r}: FreezeLab's transfer models use only input, resizing, "
                "channel, rescaling, preprocessing, base, pooling, dropout and Dense layers."
            )
        lines += layer_lines
    lines.append(f"model = keras.Model(inputs, outputs, name={literal(model.name)})")
    return CodeParts(imports, lines)


def _adaptation_code(layer: keras.layers.Layer, imports: list[str]) -> list[str] | None:
    """The input and its adaptation to the base (channels, size, scale), or None."""
    name = literal(layer.name)
    config = layer.get_config()
    if isinstance(layer, keras.layers.InputLayer):
        dtype = keras.backend.standardize_dtype(layer.dtype)
        dtype_text = "" if dtype == "float32" else f"dtype={literal(dtype)}, "
        return [
            f"inputs = keras.Input(shape={shape_text(layer.batch_shape[1:])}, {dtype_text}"
            f"name={name})",
            "x = inputs",
        ]
    if isinstance(layer, Uint8Rescaling):
        return [
            "# uint8 pixels 0..255 -> [0, 1], batch by batch (FreezeLab's Uint8Rescaling gives",
            "# exactly x / 255; this built-in layer multiplies by 1 / 255, the same to ~1e-7).",
            f"x = keras.layers.Rescaling(1 / 255, name={name})(x)",
        ]
    if isinstance(layer, RGBToGrayscale):
        imports.append("from models.layers import RGBToGrayscale  # FreezeLab's layer")
        return [
            "# RGB -> one grayscale channel (FreezeLab's layer: run from its folder).",
            f"x = RGBToGrayscale(name={name})(x)",
        ]
    if isinstance(layer, keras.layers.Resizing):
        return _resizing_code(config, name)
    if isinstance(layer, keras.layers.Concatenate):
        return [
            "# One grayscale channel -> three identical RGB channels.",
            f"x = keras.layers.Concatenate(axis={int(config['axis'])}, name={name})([x, x, x])",
        ]
    if isinstance(layer, keras.layers.Rescaling):
        scale, offset = number(config["scale"]), number(config["offset"])
        return [f"x = keras.layers.Rescaling({scale}, {offset}, name={name})(x)"]
    if isinstance(layer, ImagenetPreprocessing):
        return _preprocessing_code(layer, imports)
    return None


def _resizing_code(config: dict, name: str) -> list[str]:
    """A `Resizing` layer with the interpolation and antialiasing FreezeLab used."""
    lines = []
    arguments = [str(int(config["height"])), str(int(config["width"]))]
    if config.get("interpolation", "bilinear") != "bilinear":
        arguments.append(f"interpolation={literal(config['interpolation'])}")
    if config.get("antialias", False):
        lines.append("# Antialiased: every pixel counts when the images are made smaller.")
        arguments.append("antialias=True")
    lines.append(f"x = keras.layers.Resizing({', '.join(arguments)}, name={name})(x)")
    return lines


def _preprocessing_code(layer: ImagenetPreprocessing, imports: list[str]) -> list[str]:
    """The family's ImageNet preprocessing, with built-in layers where they compute the same."""
    name = literal(layer.name)
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
        f"x = ImagenetPreprocessing({literal(layer.mode)}, name={name})(x)",
    ]


def _head_code(layer: keras.layers.Layer) -> list[str] | None:
    """The new head after the base (pooling, dropout, the Dense classifier), or None."""
    name = literal(layer.name)
    config = layer.get_config()
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return [f"x = keras.layers.GlobalAveragePooling2D(name={name})(x)"]
    if isinstance(layer, keras.layers.Flatten):
        return [f"x = keras.layers.Flatten(name={name})(x)"]
    if isinstance(layer, keras.layers.Dropout):
        return [f"x = keras.layers.Dropout({number(config['rate'])}, name={name})(x)"]
    if isinstance(layer, keras.layers.Dense):
        activation = literal(config.get("activation", "linear"))
        return [
            f"outputs = keras.layers.Dense({int(config['units'])}, activation={activation}, "
            f"name={name})(x)"
        ]
    return None


# -------------------------------------------------------------- the data and training
def _data_code(
    dataset_key: str | None, data_input_shape: tuple, num_classes: int, pixels: bool = False
) -> CodeParts:
    """Code that loads the dataset as `x` and `y`, or a placeholder for the user's data.

    `pixels`: the model takes uint8 images 0..255 (an upload), not float32 in [0, 1].
    """
    if dataset_key in BUNDLED_DATASETS and dataset_key.startswith("digits_"):
        return _digits_data_code(dataset_key)
    if dataset_key == "shapes":
        return CodeParts(
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
        return CodeParts(
            [],
            [
                f"# Data: keras.datasets.{module} (Keras downloads it once). FreezeLab may have",
                "# used a stratified subset; slice x and y to train on fewer images.",
                f"(x, y), _ = keras.datasets.{module}.load_data()",
                f'x = (x.astype("float32") / 255.0){channel}',
                "y = y.reshape(-1)",
            ],
        )
    shape = ", ".join(map(str, data_input_shape))
    if pixels:
        x_line = f"#   x: uint8 array of shape (num_samples, {shape}), pixels 0..255 (the model"
        scale_line = ["#      scales them; FreezeLab stored your images this way)"]
    else:
        x_line = f"#   x: float32 array of shape (num_samples, {shape})"
        x_line += ", values in [0, 1]" if len(data_input_shape) == 3 else ""
        scale_line = []
    return CodeParts(
        [],
        [
            "# Data: FreezeLab used your upload. Load it here as",
            x_line,
            *scale_line,
            f"#   y: integer labels 0..{num_classes - 1} of shape (num_samples,)",
            "x, y = ...  # replace with your arrays",
        ],
    )


def _digits_data_code(dataset_key: str) -> CodeParts:
    """scikit-learn's digits, kept to the dataset's range and relabelled as FreezeLab does."""
    first, last = (int(part) for part in dataset_key.removeprefix("digits_").split("_"))
    digits = tuple(range(first, last + 1))
    return CodeParts(
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


def _training_code(config: TrainingConfig, multipliers: dict[str, float]) -> CodeParts:
    """The split, compile (after the flags) and fit with FreezeLab's settings.

    `multipliers`: `rate_multipliers(config, tree)`; when some weight's is not 1, the script
    defines its layer-rate optimizer subclass and resolves them on its model first.
    """
    optimizer = f"keras.optimizers.{_OPTIMIZER_CLASSES[config.optimizer]}(learning_rate="
    lines = []
    if multipliers:
        lines += [
            "",  # two blank lines around a class
            *optimizer_class_lines(config.optimizer),
            "",
            "",
            *rates_lines(multipliers, str(config.layer_rates)),
            "",
        ]
        optimizer = f"{optimizer_class_name(config.optimizer)}(variable_multipliers, learning_rate="
    lines += [
        "# Compile AFTER setting the flags: Keras reads them when it compiles.",
        f"keras.utils.set_random_seed({int(config.seed)})",
    ]
    imports: list[str] = []
    if config.validation_fraction > 0:
        imports.append("from sklearn.model_selection import train_test_split")
        lines += [
            "# A stratified split, as FreezeLab makes it.",
            *wrap_call(
                "x_train, x_validation, y_train, y_validation = train_test_split(",
                [
                    "x",
                    "y",
                    f"test_size={number(config.validation_fraction)}",
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
        f"    optimizer={optimizer}{number(config.learning_rate)}),",
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
    return CodeParts(imports, lines)
