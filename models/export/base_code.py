"""Code that rebuilds the script's base: the bundled CNN, keras.applications, an upload, Dense."""

from __future__ import annotations

import keras

from models.applications import APPLICATION_ENTRIES, ApplicationEntry
from models.bundled import FEATURE_EXTRACTOR_NAME
from models.catalogue import MODEL_CATALOGUE, bundled_model_path
from models.export.files import BASE_MODEL_BUTTON
from models.export.source import (
    PATH_IMPORT,
    CodeParts,
    comment_text,
    list_lines,
    literal,
    number,
    shape_text,
    wrap_call,
)
from models.template import MODEL_KEY_FORMS, ModelKind, ModelTemplate, parse_model_key


def base_code(template: ModelTemplate, base: keras.Model) -> CodeParts:
    """Code that builds or loads the base as FreezeLab did, as the variable `base`."""
    try:
        key = parse_model_key(template.key)
    except ValueError:
        key = None
    kind = key.kind if key is not None else None
    if kind is ModelKind.BUNDLED:
        return _bundled_base_code(key.catalogue_key)
    if kind is ModelKind.APPLICATION and key.catalogue_key in APPLICATION_ENTRIES:
        return _application_base_code(APPLICATION_ENTRIES[key.catalogue_key], template, base)
    if kind is ModelKind.UPLOAD:
        return _uploaded_base_code(key.filename, key.cut_layer, base)
    if kind is ModelKind.DENSE_BASE:
        return CodeParts([], _dense_base_code(base))
    raise ValueError(
        f"generate_code does not know how to rebuild the base of template {template.key!r}. "
        f"Expected a model key: {MODEL_KEY_FORMS}; a keras.applications key must name a "
        f"model of the catalogue ({', '.join(sorted(APPLICATION_ENTRIES))})."
    )


def _model_file_code(file_name: str, message: list[str], variable: str) -> list[str]:
    """Lines that load a `.keras` file lying next to the script, or explain how to get it.

    `message` is fixed text of ours, one fragment a line, with `{BASE_MODEL_FILE}` and
    `{SCRIPT_FOLDER}` placeholders filled in when the script runs (no quotes or other
    braces); the untrusted `file_name` is only ever written as an escaped literal.
    """
    fragments = ["The base model file {BASE_MODEL_PATH} is missing. ", *message]
    return [
        f"BASE_MODEL_FILE = {literal(file_name)}",
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


def _bundled_base_code(catalogue_key: str) -> CodeParts:
    """A bundled model's feature extractor, from the model file downloaded next to the script."""
    file_name = bundled_model_path(catalogue_key).name
    title = MODEL_CATALOGUE[catalogue_key]
    return CodeParts(
        [PATH_IMPORT],
        [
            "# The pretrained base: the feature extractor of FreezeLab's bundled model",
            f"# {title}.",
            f"# Download {file_name} with the",
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
            f"base = pretrained.get_layer({literal(FEATURE_EXTRACTOR_NAME)})",
        ],
    )


def _application_base_code(
    entry: ApplicationEntry, template: ModelTemplate, base: keras.Model
) -> CodeParts:
    """A keras.applications base without its classifier, with FreezeLab's names."""
    input_shape = tuple(int(size) for size in base.input_shape[1:])
    input_name = base.layers[0].name if base.layers else "input_layer"
    weights = '"imagenet"' if template.pretrained else "None"
    weights_comment = (
        "# ImageNet weights: Keras downloads them once into ~/.keras/models."
        if template.pretrained
        else "# weights=None: random initialisation, as in FreezeLab (not pretrained)."
    )
    arguments = [
        f"input_shape={shape_text(input_shape)}",
        f"input_tensor=keras.Input(shape={shape_text(input_shape)}, name={literal(input_name)})",
        "include_top=False",
        f"weights={weights}",
        *[f"{argument}={value!r}" for argument, value in entry.builder_arguments],
        f"name={literal(base.name)}",
    ]
    lines = [
        f"# The base: {comment_text(entry.title)} from keras.applications, without its",
        "# ImageNet classifier (include_top=False). The input and model names are given so",
        "# the layer names match FreezeLab's.",
        weights_comment,
    ]
    if entry.imagenet_stddev_rescaling and template.pretrained:
        lines.append(
            "# Keras adds a Rescaling layer after Normalization for ImageNet weights "
            "(FreezeLab names it imagenet_stddev_rescaling)."
        )
    lines += wrap_call(f"base = keras.applications.{entry.builder}(", arguments)
    return CodeParts([], lines)


def _uploaded_base_code(file_name: str, cut_layer: str, base: keras.Model) -> CodeParts:
    """The learner's uploaded model, loaded from next to the script and cut at its layer."""
    return CodeParts(
        [PATH_IMPORT],
        [
            f"# The base: your uploaded model {comment_text(file_name)}. Put the file next "
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
            f"# Everything up to and including layer {comment_text(cut_layer)} is the base;"
            " later layers are dropped.",
            *wrap_call(
                "base = keras.Model(",
                [
                    "uploaded.inputs",
                    f"uploaded.get_layer({literal(cut_layer)}).output",
                    f"name={literal(base.name)}",
                ],
            ),
        ],
    )


def _dense_base_code(base: keras.Model) -> list[str]:
    """FreezeLab's Dense base for tables, written out layer by layer."""
    lines = [
        "# The base: FreezeLab's Dense base for tabular data (random initialisation, not",
        "# pretrained). Its Normalization layer standardises the features with the table's",
        "# mean and variance.",
        "base = keras.Sequential(",
        "    [",
        f'        keras.Input(shape={shape_text(base.input_shape[1:])}, name="features_input"),',
    ]
    for layer in base.layers:
        lines += _dense_base_layer_code(layer)
    lines += ["    ],", f"    name={literal(base.name)},", ")"]
    return lines


def _dense_base_layer_code(layer: keras.layers.Layer) -> list[str]:
    """One layer of the Dense base, as an item of `keras.Sequential([...])`."""
    config = layer.get_config()
    name = literal(layer.name)
    if isinstance(layer, keras.layers.Normalization):
        lines = ["        keras.layers.Normalization("]
        for argument in ("mean", "variance"):
            values = [number(value) for value in config[argument]]
            lines += list_lines(f"{argument}=", values, " " * 12, ",")
        return [*lines, f"            name={name},", "        ),"]
    if isinstance(layer, keras.layers.Dense):
        bias = "" if config.get("use_bias", True) else ", use_bias=False"
        return [f"        keras.layers.Dense({int(config['units'])}{bias}, name={name}),"]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [f"        keras.layers.BatchNormalization(name={name}),"]
    if isinstance(layer, keras.layers.ReLU):
        return [f"        keras.layers.ReLU(name={name}),"]
    raise ValueError(
        f"generate_code cannot write layer {layer.name!r} ({type(layer).__name__}) of "
        "the Dense base; expected Normalization, Dense, BatchNormalization or ReLU."
    )
