"""Build keras.applications bases, randomly initialised or with ImageNet weights from the cache.

The weights come from the Keras cache (`~/.keras/models`), downloaded into it when missing and
allowed; any failure says how to continue offline. The catalogue itself (`ApplicationEntry`,
`APPLICATION_ENTRIES`, `APPLICATIONS`, input sizes) is `models.application_entries`; its names
are re-exported here.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import keras

from models.application_entries import (
    APPLICATION_ENTRIES,
    APPLICATIONS,
    MAX_INPUT_SIZE,
    ApplicationEntry,
    get_application_entry,
    validate_input_size,
)
from models.download import DownloadError, ProgressCallback, download_file
from models.layers import IMAGENET_STD_RGB
from models.template import ModelKey, ModelTemplate

__all__ = [
    "APPLICATIONS",
    "APPLICATION_ENTRIES",
    "MAX_INPUT_SIZE",
    "MODELS_SUBDIR",
    "PRETRAINED_LABEL",
    "RANDOM_INITIALISATION_LABEL",
    "ApplicationEntry",
    "WeightsUnavailableError",
    "application_template",
    "application_title",
    "build_application_base",
    "get_application_entry",
    "imagenet_weights_path",
    "keras_cache_dir",
    "validate_input_size",
]

MODELS_SUBDIR = "models"
RANDOM_INITIALISATION_LABEL = "not pretrained (random initialisation)"
PRETRAINED_LABEL = "pretrained on ImageNet"


class WeightsUnavailableError(ValueError):
    """ImageNet weights are neither in the Keras cache nor downloadable.

    The message names the model, the missing file and the folder to put it in, and says the
    model can still be used with random initialisation.

    Attributes:
        key: The catalogue key.
        file_name: The weights file Keras looks for.
        folder: The folder it should be in (`<Keras cache>/models`).
        url: Where Keras downloads it from.
    """

    def __init__(self, message: str, *, key: str, file_name: str, folder: Path, url: str):
        super().__init__(message)
        self.key = key
        self.file_name = file_name
        self.folder = folder
        self.url = url


def keras_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Keras cache folder: `cache_dir`, else `$KERAS_HOME`, else `~/.keras`.

    Keras keeps downloaded weights in its `models` subfolder and datasets in `datasets`.

    Args:
        cache_dir: An explicit cache folder, or None for the default.

    Returns:
        The folder as an absolute `Path` (it may not exist).

    Example:
    >>> keras_cache_dir("/data/keras")
    PosixPath('/data/keras')
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser().absolute()
    keras_home = os.environ.get("KERAS_HOME")
    if keras_home:
        return Path(keras_home).expanduser().absolute()
    return (Path.home() / ".keras").absolute()


def imagenet_weights_path(
    key: str, input_size: int, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Where the ImageNet weights (without the top) of a catalogue model live in the cache.

    Args:
        key: A key of `APPLICATIONS`.
        input_size: Input height and width (only MobileNetV2's file depends on it).
        cache_dir: The Keras cache folder; None for `$KERAS_HOME` or `~/.keras`.

    Returns:
        `<cache>/models/<weights file>`; the file may not exist.

    Example:
    >>> imagenet_weights_path("resnet50", 96, "/tmp/keras").name
    'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    entry = get_application_entry(key)
    size = validate_input_size(key, input_size)
    return keras_cache_dir(cache_dir) / MODELS_SUBDIR / entry.weights_file_name(size)


def _build_random(entry: ApplicationEntry, input_size: int) -> keras.Model:
    builder = getattr(keras.applications, entry.builder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return builder(
            include_top=False,
            weights=None,
            input_shape=(input_size, input_size, 3),
            **dict(entry.builder_arguments),
        )


def _add_imagenet_stddev_rescaling(base: keras.Model) -> keras.Model:
    """Rebuilds an EfficientNet with the layer Keras adds only when it loads ImageNet weights.

    `keras.applications.EfficientNet*(weights="imagenet")` inserts
    `Rescaling(1 / sqrt(stddev))` after its Normalization layer (keras-team/keras, see
    efficientnet.py); `weights=None` or a weights path does not. Loading the ImageNet file
    into the `weights=None` graph would therefore compute different features.
    """

    def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        outputs = layer(*args, **kwargs)
        if isinstance(layer, keras.layers.Normalization):
            scale = [1.0 / math.sqrt(stddev) for stddev in IMAGENET_STD_RGB]
            outputs = keras.layers.Rescaling(scale, name="imagenet_stddev_rescaling")(outputs)
        return outputs

    inputs = keras.Input(tuple(base.input_shape[1:]), name="input_layer")
    return keras.models.clone_model(base, input_tensors=inputs, call_function=call_function)


def _build_from_file(entry: ApplicationEntry, input_size: int, path: Path) -> keras.Model:
    if entry.imagenet_stddev_rescaling:
        base = _add_imagenet_stddev_rescaling(_build_random(entry, input_size))
        base.load_weights(str(path))
        return base
    builder = getattr(keras.applications, entry.builder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return builder(
            include_top=False,
            weights=str(path),
            input_shape=(input_size, input_size, 3),
            **dict(entry.builder_arguments),
        )


def _unavailable(
    entry: ApplicationEntry, input_size: int, folder: Path, reason: str
) -> WeightsUnavailableError:
    file_name = entry.weights_file_name(input_size)
    url = entry.weights_url(input_size)
    message = (
        f"ImageNet weights for {entry.title} are not available: {reason} To use them "
        f"offline, download {url} on a machine with internet access and put the file "
        f"'{file_name}' in {folder} (the Keras cache, ~/.keras/models unless KERAS_HOME is "
        f"set). Or continue with random initialisation: the model is then "
        f"{RANDOM_INITIALISATION_LABEL}."
    )
    return WeightsUnavailableError(
        message, key=entry.key, file_name=file_name, folder=folder, url=url
    )


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text[:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def build_application_base(
    key: str,
    input_size: int,
    *,
    pretrained: bool,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    on_progress: ProgressCallback | None = None,
) -> tuple[keras.Model, bool]:
    """Builds a keras.applications base without its top, pretrained or randomly initialised.

    With `pretrained=True` the ImageNet weights come from the Keras cache file
    (`imagenet_weights_path`) when it exists: its path is passed as `weights=` so nothing is
    downloaded or re-hashed. Otherwise, if `allow_download`, `models.download.download_file`
    downloads it from Keras's URL into the same cache file, checking Keras's hash where Keras
    has one, with a timeout on a stalled connection (`$FREEZELAB_DOWNLOAD_TIMEOUT_S`, default
    20 s) and progress reports; a failed download leaves nothing in the cache. Any failure
    (no network, a stall, a corrupt or wrong file) raises `WeightsUnavailableError`, whose
    message offers the offline ways out. EfficientNet gets the extra rescaling layer Keras
    adds for ImageNet weights, so its features match `EfficientNetB0(weights="imagenet")`
    exactly.

    Args:
        key: A key of `APPLICATIONS`.
        input_size: Input height and width in pixels (see `validate_input_size`).
        pretrained: True for ImageNet weights, False for random initialisation.
        cache_dir: The Keras cache folder; None for `$KERAS_HOME` or `~/.keras`.
        allow_download: Whether a missing weights file may be downloaded.
        on_progress: Called as `on_progress(bytes_done, bytes_total)` while the weights
            download (`bytes_total` is None when the server sends no size); not called when
            the file is already in the cache. Its exceptions propagate unchanged.

    Returns:
        `(base, is_pretrained)`: the uncompiled Functional model taking
        `(input_size, input_size, 3)` images, and whether it holds ImageNet weights.

    Raises:
        ValueError: For an unknown key or a bad input size.
        WeightsUnavailableError: When `pretrained` and the weights cannot be loaded.

    Example:
    >>> base, is_pretrained = build_application_base("mobilenet_v2_035", 96, pretrained=False)
    >>> is_pretrained, base.input_shape
    (False, (None, 96, 96, 3))
    """
    entry = get_application_entry(key)
    size = validate_input_size(key, input_size)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False; received {pretrained!r}.")
    if not pretrained:
        return _build_random(entry, size), False

    path = imagenet_weights_path(key, size, cache_dir)
    folder = path.parent
    if not path.is_file():
        if not allow_download:
            raise _unavailable(
                entry, size, folder, f"'{path.name}' is not in {folder} and downloading is off."
            )
        try:
            download_file(
                entry.weights_url(size),
                path,
                file_hash=entry.weights_file_hash,
                on_progress=on_progress,
            )
        except DownloadError as error:
            raise _unavailable(
                entry,
                size,
                folder,
                f"'{path.name}' is not in {folder} and downloading it failed: {error.reason}",
            ) from error
    try:
        base = _build_from_file(entry, size, path)
    except Exception as error:
        raise _unavailable(
            entry,
            size,
            folder,
            f"the file {path} exists but could not be loaded ({_describe(error)}); it may be "
            "incomplete or for another model. Delete it and try again.",
        ) from error
    return base, True


def application_title(key: str, input_size: int, pretrained: bool) -> str:
    """The menu title of a catalogue model at a size, saying whether it is pretrained.

    Example:
    >>> application_title("resnet50", 96, False)
    'ResNet50 · 96 px · not pretrained (random initialisation)'
    """
    entry = get_application_entry(key)
    label = PRETRAINED_LABEL if pretrained else RANDOM_INITIALISATION_LABEL
    return f"{entry.title} · {int(input_size)} px · {label}"


def application_template(
    key: str,
    input_size: int | None = None,
    pretrained: bool = True,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    on_progress: ProgressCallback | None = None,
) -> ModelTemplate:
    """Builds a catalogue model and captures it as a read-only `ModelTemplate`.

    The template carries the family's `preprocessing` mode, so `build_transfer_model` (and
    `Workspace`) insert the matching `ImagenetPreprocessing` layer before the base. Its title
    and description say "not pretrained (random initialisation)" when it is.

    Args:
        key: A key of `APPLICATIONS`.
        input_size: Input height and width; None for the entry's default.
        pretrained: Whether to load ImageNet weights (see `build_application_base`).
        cache_dir: The Keras cache folder; None for `$KERAS_HOME` or `~/.keras`.
        allow_download: Whether a missing weights file may be downloaded.
        on_progress: Called as `on_progress(bytes_done, bytes_total)` while the weights
            download (see `build_application_base`).

    Returns:
        A `ModelTemplate` whose key is e.g. "resnet50@96:imagenet" or "resnet50@96:random".

    Raises:
        WeightsUnavailableError: When `pretrained` and the weights cannot be loaded; call
            again with `pretrained=False` to continue with random initialisation.

    Example:
    >>> template = application_template("mobilenet_v2_035", 96, pretrained=False)
    >>> template.title
    'MobileNetV2 (alpha 0.35) · 96 px · not pretrained (random initialisation)'
    """
    entry = get_application_entry(key)
    size = entry.default_input_size if input_size is None else validate_input_size(key, input_size)
    base, is_pretrained = build_application_base(
        key,
        size,
        pretrained=pretrained,
        cache_dir=cache_dir,
        allow_download=allow_download,
        on_progress=on_progress,
    )
    if is_pretrained:
        weights_text = "Pretrained on ImageNet (Keras's weights)."
    else:
        weights_text = (
            "Not pretrained (random initialisation): the weights are random, so freezing "
            "them transfers nothing learned."
        )
    return ModelTemplate.from_model(
        base,
        key=ModelKey.application(key, size, is_pretrained).format(),
        title=application_title(key, size, is_pretrained),
        description=f"{entry.description} {weights_text} Input {size}x{size}x3.",
        pretrained=is_pretrained,
        preprocessing=entry.preprocessing,
    )
