"""Loads a user's uploaded Keras model safely and turns it into a base at a chosen cut layer."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras

import models.layers  # noqa: F401  (registers FreezeLab's layers so saved FreezeLab models load)
from models.checks import human_size as _human_size
from models.names import with_internal_names
from models.template import ModelKey, ModelTemplate
from models.transfer import cut_base

DEFAULT_MAX_MODEL_BYTES = 200 * 1024 * 1024
MODEL_EXTENSIONS: tuple[str, ...] = (".keras", ".h5", ".hdf5")
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Weightless layers that may follow or precede the classifier and belong to the head.
_HEAD_ACTIVATIONS = ("Activation", "Softmax")
_HEAD_DROPOUTS = ("Dropout", "AlphaDropout", "GaussianDropout", "SpatialDropout1D")
_INTERNAL_CLASS_NAMES = frozenset(
    {
        "__keras_tensor__",
        "__tensor__",
        "__numpy__",
        "__bytes__",
        "__typespec__",
        "__tuple__",
        "__lambda__",
        "__ellipsis__",
        "__slice__",
    }
)


def _display_name(filename: str) -> str:
    name = Path(str(filename).replace("\\", "/")).name or "model"
    return name[:100]


def _config_objects(config: Any) -> list[dict]:
    """Every serialised object (a dict with "class_name" and "config") in a config tree."""
    found: list[dict] = []
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item and "config" in item:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def _has_serialised_function(config: Any) -> bool:
    """Whether the config stores Python bytecode: a `__lambda__` object, or the
    `{"value": [code, defaults, closure]}` form Keras 3 writes for a lambda activation."""
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "__lambda__":
                return True
            value = item.get("value")
            if (
                set(item) == {"value"}
                and isinstance(value, list)
                and len(value) == 3
                and isinstance(value[0], str)
            ):
                return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _object_name(item: dict) -> str:
    config = item.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return str(item.get("name") or name or "?")


def _is_known_class(item: dict) -> bool:
    class_name = str(item.get("class_name"))
    registered_name = item.get("registered_name")
    module = item.get("module")
    if class_name in _INTERNAL_CLASS_NAMES:
        return True
    if registered_name and keras.saving.get_registered_object(registered_name) is not None:
        return True
    if module:
        return str(module).split(".")[0] == "keras"
    # Legacy .h5 configs carry only the class name.
    registered = keras.saving.get_custom_objects()
    if class_name in registered or any(key.endswith(f">{class_name}") for key in registered):
        return True
    return any(
        hasattr(namespace, class_name)
        for namespace in (
            keras.layers,
            keras.models,
            keras.initializers,
            keras.regularizers,
            keras.constraints,
            keras.activations,
        )
    ) or class_name in ("Functional", "Sequential", "Model", "DTypePolicy")


def _read_keras_config_text(path: Path, max_bytes: int, display_name: str) -> bytes:
    """The config.json of a .keras zip archive, after checking the archive's sizes."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"'{display_name}' is not a Keras model file: a .keras file is a zip archive "
            "(made by model.save('model.keras')), but this file is not a zip archive. "
            "Upload a model saved with Keras 3."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            total = sum(info.file_size for info in members.values())
            if total > 2 * max_bytes:
                raise ValueError(
                    f"'{display_name}' unpacks to {_human_size(total)}, more than the "
                    f"{_human_size(2 * max_bytes)} allowed for a {_human_size(max_bytes)} "
                    "upload. Upload a smaller model."
                )
            if "config.json" not in members:
                shown = ", ".join(sorted(members)[:5]) or "nothing"
                raise ValueError(
                    f"'{display_name}' is a zip archive but not a Keras model: it has no "
                    f"config.json (it contains {shown}). Upload a file made by "
                    "model.save('model.keras')."
                )
            if members["config.json"].file_size > MAX_CONFIG_BYTES:
                raise ValueError(
                    f"'{display_name}' has a {_human_size(members['config.json'].file_size)}"
                    f" config.json, more than the {_human_size(MAX_CONFIG_BYTES)} allowed."
                )
            with archive.open("config.json") as config_file:
                text = config_file.read(MAX_CONFIG_BYTES + 1)
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"'{display_name}' is a damaged zip archive ({error}); upload the model file "
            "again or save it again with model.save('model.keras')."
        ) from error
    return text


def _read_h5_config_text(path: Path, display_name: str) -> str | bytes:
    """The `model_config` attribute of an .h5 model file."""
    import h5py

    try:
        with h5py.File(path, "r") as h5_file:
            text = h5_file.attrs.get("model_config")
    except OSError as error:
        raise ValueError(
            f"'{display_name}' is not a Keras model file: it is not a valid HDF5 file "
            f"({error}). Upload a .keras file, or an .h5 file made by model.save('model.h5')."
        ) from error
    if text is None:
        raise ValueError(
            f"'{display_name}' is an HDF5 file without a model configuration: it probably "
            "holds weights only (model.save_weights). Upload the whole model, saved with "
            "model.save('model.keras')."
        )
    return text


def _read_config(path: Path, extension: str, max_bytes: int, display_name: str) -> Any:
    """Reads the model config JSON without deserialising anything."""
    if extension == ".keras":
        text = _read_keras_config_text(path, max_bytes, display_name)
    else:
        text = _read_h5_config_text(path, display_name)
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(
            f"'{display_name}' has an unreadable model configuration ({error}); the file is "
            "damaged. Save the model again with model.save('model.keras')."
        ) from error


def _refuse_unsafe_or_unknown(config: Any, display_name: str) -> None:
    if isinstance(config, dict):  # compile=False: the loss and metrics are never loaded
        config = {key: value for key, value in config.items() if key != "compile_config"}
    objects = _config_objects(config)
    lambdas = [_object_name(item) for item in objects if item.get("class_name") == "Lambda"]
    if lambdas:
        raise ValueError(
            f"'{display_name}' was refused: it contains Lambda layer(s) {lambdas}. A Lambda "
            "layer stores Python code in the file, and loading it would run that code on this "
            "server, so FreezeLab loads models in Keras's safe mode, which refuses it. "
            "Replace the Lambda layer with built-in Keras layers (or a registered custom "
            "layer class) and save the model again."
        )
    if _has_serialised_function(config):
        raise ValueError(
            f"'{display_name}' was refused: it stores a Python lambda function (e.g. as an "
            "activation). Loading it would run that code on this server, so FreezeLab loads "
            "models in Keras's safe mode, which refuses it. Use named built-in activations "
            "such as 'relu' and save the model again."
        )
    unknown = sorted({str(item.get("class_name")) for item in objects if not _is_known_class(item)})
    if unknown:
        raise ValueError(
            f"'{display_name}' uses custom classes FreezeLab does not know: {unknown}. Only "
            "built-in Keras layers (and FreezeLab's own) can be loaded, because the code of a "
            "custom class is not in the file. Rebuild the model from built-in layers and save "
            "it again."
        )


def _explain_load_error(error: Exception, display_name: str) -> str:
    chain, cause = [], error
    while cause is not None and len(chain) < 10:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = str(error)
    if any("arbitrary code" in message or "safe_mode" in message for message in chain):
        return (
            f"'{display_name}' was refused: it contains Python code (a lambda or function "
            "stored in the file). Loading it would run that code on this server, so FreezeLab "
            "loads models in Keras's safe mode, which refuses it. Save the model with "
            "built-in layers only."
        )
    first_line = text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
    return (
        f"'{display_name}' could not be loaded as a Keras model ({type(error).__name__}: "
        f"{first_line}). The file may be damaged or saved by an incompatible Keras version; "
        "save it again with Keras 3: model.save('model.keras')."
    )


def _shapes(tensors: list) -> str:
    return ", ".join(str(tuple(tensor.shape)) for tensor in tensors)


def _check_loaded_model(model: Any, display_name: str) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"'{display_name}' holds a {type(model).__name__}, not a Keras model. Upload a "
            "Sequential or Functional model saved with model.save('model.keras')."
        )
    try:
        inputs = list(model.inputs)
        outputs = list(model.outputs)
    except (AttributeError, ValueError):
        inputs, outputs = [], []
    if not inputs or not outputs:
        raise ValueError(
            f"'{display_name}' holds a model without known inputs (a subclassed or unbuilt "
            "model). Upload a Sequential or Functional model built with keras.Input."
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"FreezeLab needs a model with one input and one output; '{display_name}' has "
            f"{len(inputs)} input(s) (shapes {_shapes(inputs)}) and {len(outputs)} output(s) "
            f"(shapes {_shapes(outputs)}). Upload a single-input, single-output model, e.g. "
            "keras.Model(inputs=image, outputs=predictions)."
        )
    if not model.weights:
        raise ValueError(
            f"'{display_name}' has no weights: none of its {len(model.layers)} layers has "
            "variables, so there is nothing pretrained to transfer. Upload a model with "
            "trained layers (Dense, Conv2D, ...)."
        )
    rank = len(inputs[0].shape)
    if rank not in (2, 4):
        raise ValueError(
            f"FreezeLab uses images (batch, height, width, channels) or feature vectors "
            f"(batch, num_features); '{display_name}' takes inputs of shape "
            f"{tuple(inputs[0].shape)}. Upload an image or tabular model."
        )
    return model


def load_uploaded_model(
    data: bytes, filename: str, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES
) -> keras.Model:
    """Loads an uploaded `.keras` (or legacy `.h5`) model in Keras's safe mode.

    Checks, in order: the size limit, the extension, that the file is a Keras archive or
    HDF5 model, and its configuration (read as JSON, nothing executed): Lambda layers are
    refused (they would run code stored in the file), as are classes Keras does not know.
    It is then loaded with `keras.saving.load_model(path, safe_mode=True, compile=False)` from
    a private temporary file, and must have exactly one input (images or feature vectors),
    one output and at least one weight.

    Args:
        data: The file's bytes.
        filename: The uploaded file's name; only its extension and base name are used.
        max_bytes: Largest accepted upload, in bytes.

    Returns:
        The uncompiled model.

    Raises:
        ValueError: With a message saying what was received and what is expected.

    Example:
    >>> model = load_uploaded_model(Path("model.keras").read_bytes(), "model.keras")
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"load_uploaded_model expects the file's bytes; received {type(data).__name__}."
        )
    data = bytes(data)
    display_name = _display_name(filename)
    if not data:
        raise ValueError(f"'{display_name}' is empty (0 bytes). Upload a saved Keras model.")
    if len(data) > max_bytes:
        raise ValueError(
            f"'{display_name}' is {_human_size(len(data))}; the limit is "
            f"{_human_size(max_bytes)}. Upload a smaller model (e.g. cut it or use a "
            "MobileNet)."
        )
    lower_name = display_name.lower()
    if lower_name.endswith(".weights.h5"):
        raise ValueError(
            f"'{display_name}' holds weights only (a .weights.h5 file), without the model's "
            "architecture. Upload the whole model, saved with model.save('model.keras')."
        )
    extension = Path(lower_name).suffix
    if extension not in MODEL_EXTENSIONS:
        raise ValueError(
            f"'{display_name}' has the extension {extension or '(none)'!r}; FreezeLab loads "
            "Keras models saved as .keras (Keras 3) or legacy .h5 files. Save the model with "
            "model.save('model.keras')."
        )
    with tempfile.TemporaryDirectory(prefix="freezelab_upload_") as folder:
        path = Path(folder) / f"uploaded{extension}"
        path.write_bytes(data)
        config = _read_config(path, extension, max_bytes, display_name)
        _refuse_unsafe_or_unknown(config, display_name)
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as error:
            raise ValueError(_explain_load_error(error, display_name)) from error
    return _check_loaded_model(model, display_name)


def _top_level_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def cut_layer_choices(model: keras.Model) -> list[str]:
    """Names of the top-level layers a base can end at, in model order.

    A layer qualifies when it has one output of rank 2 (feature vectors) or 4 (feature maps),
    the outputs `build_transfer_model` can put a head on.

    Args:
        model: A loaded Functional or Sequential model.

    Returns:
        Layer names, first to last.

    Example:
    >>> cut_layer_choices(load_bundled_model())
    ['feature_extractor', 'classifier']
    """
    choices = []
    for layer in _top_level_layers(model):
        try:
            output = layer.output
        except (AttributeError, ValueError):
            continue  # shared layers have several outputs
        if isinstance(output, list | tuple) or len(output.shape) not in (2, 4):
            continue
        choices.append(layer.name)
    return choices


def default_cut_layer(model: keras.Model) -> str:
    """The layer that ends the base by default: the one before the classifier.

    The rule: walk back from the last top-level layer, skipping a trailing `Activation` or
    `Softmax` layer; if the layer reached is a `Dense` layer (the classifier), skip it and
    any `Dropout` layers right before it, and return the layer reached. A model that does
    not end in a Dense classifier (already a feature extractor) is used whole: its last
    layer is returned. So is a model whose only layer is its classifier.

    Args:
        model: A loaded Functional or Sequential model.

    Returns:
        A top-level layer name, one of `cut_layer_choices(model)` for usual models.

    Example:
    >>> default_cut_layer(load_bundled_model())
    'feature_extractor'
    """
    layers = _top_level_layers(model)
    if not layers:
        raise ValueError(
            f"model '{model.name}' has no layers besides its input; there is nothing to cut."
        )
    index = len(layers) - 1
    while index > 0 and type(layers[index]).__name__ in _HEAD_ACTIVATIONS:
        index -= 1
    if not isinstance(layers[index], keras.layers.Dense):
        return layers[-1].name
    index -= 1
    while index >= 0 and type(layers[index]).__name__ in _HEAD_DROPOUTS:
        index -= 1
    if index < 0:
        return layers[-1].name
    return layers[index].name


def uploaded_template(model: keras.Model, cut_layer: str, filename: str) -> ModelTemplate:
    """Cuts an uploaded model at a layer and captures the base as a `ModelTemplate`.

    Everything up to and including `cut_layer` becomes the base (weights as uploaded, so
    `pretrained=True`); the layers after it are dropped, and `Workspace` adds a new head for
    the chosen dataset. Inputs reach the base as FreezeLab's [0, 1] images (no preprocessing
    is added: the model should expect that range).

    Layer names TensorFlow cannot train under (spaces, "<", non-ASCII letters, ...; see
    `models.names`) get internal names in the template's config, so the model trains; the
    layer tree and its paths, the drift records, charts and exported code still show and use
    the names of the uploaded file (a downloaded `.keras` model keeps the internal names).

    Args:
        model: A model from `load_uploaded_model`.
        cut_layer: One of `cut_layer_choices(model)`, e.g. `default_cut_layer(model)`.
        filename: The uploaded file's name, for the title.

    Returns:
        The template; its key is "upload:<file>:<cut layer>".

    Raises:
        ValueError: For an unknown or unusable cut layer, or a base without weights.

    Example:
    >>> template = uploaded_template(model, default_cut_layer(model), "digits.keras")
    """
    display_name = _display_name(filename)
    choices = cut_layer_choices(model)
    if cut_layer not in choices:
        shown = ", ".join(repr(name) for name in choices[-10:]) or "none"
        raise ValueError(
            f"{cut_layer!r} cannot end the base of '{display_name}': the cut layer must be a "
            f"top-level layer with one output of feature vectors or feature maps. Choose one "
            f"of: {shown}."
        )
    base = cut_base(model, cut_layer, name="uploaded_base")
    if not base.weights:
        raise ValueError(
            f"Cutting '{display_name}' at {cut_layer!r} leaves a base without weights: no "
            "layer up to it has been trained. Choose a later cut layer."
        )
    layers = _top_level_layers(model)
    names = [layer.name for layer in layers]
    kept = names.index(cut_layer) + 1
    dropped = names[kept:]
    dropped_text = f"; dropped {dropped}" if dropped else ""
    base, renamed = with_internal_names(base)
    renamed_text = ""
    if renamed:
        shown = ", ".join(repr(name) for name in list(renamed)[:3])
        more = f" and {len(renamed) - 3} more" if len(renamed) > 3 else ""
        renamed_text = (
            f" {len(renamed)} layer name(s) TensorFlow cannot train under ({shown}{more}) get "
            "internal names for training; the layer tree, charts and exported code show yours."
        )
    return ModelTemplate.from_model(
        base,
        key=ModelKey.upload(display_name, cut_layer).format(),
        title=f"Uploaded: {display_name} (cut at {cut_layer})",
        description=(
            f"Your model '{model.name}' from {display_name}, up to and including layer "
            f"{cut_layer!r} ({kept} of {len(layers)} layers kept{dropped_text}), with the "
            "uploaded weights. A new head is added for the chosen dataset; images arrive in "
            f"[0, 1].{renamed_text}"
        ),
        pretrained=True,
    )
