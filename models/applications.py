"""The keras.applications catalogue: ImageNet bases, their weights files and preprocessing."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import keras

from models.download import DownloadError, ProgressCallback, download_file
from models.layers import IMAGENET_STD_RGB
from models.template import ModelKey, ModelTemplate
from models.validation import check_whole_number

MODELS_SUBDIR = "models"
MAX_INPUT_SIZE = 512
RANDOM_INITIALISATION_LABEL = "not pretrained (random initialisation)"
PRETRAINED_LABEL = "pretrained on ImageNet"
_KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_CPU_SIZES = (32, 64, 96, 128, 160, 224)


@dataclass(frozen=True)
class ApplicationEntry:
    """One keras.applications base model FreezeLab offers, always built with include_top=False.

    Attributes:
        key: Stable id, e.g. "mobilenet_v2_035".
        title: Human name, e.g. "MobileNetV2 (alpha 0.35)".
        family: The `keras.applications` submodule, e.g. "mobilenet_v2"; its
            `preprocess_input` is what `preprocessing` reproduces.
        builder: Name of the constructor in `keras.applications`, e.g. "MobileNetV2".
        builder_arguments: Extra constructor arguments, as (name, value) pairs.
        default_input_size: Input height and width offered first (small, for CPUs).
        input_sizes: Input sizes offered in menus; any integer from `min_input_size` to
            `MAX_INPUT_SIZE` is accepted.
        min_input_size: Smallest height/width the architecture accepts.
        preprocessing: `ImagenetPreprocessing` mode mapping [0, 1] images as the family's
            `preprocess_input` maps [0, 255] images ("none": the model normalises itself).
        weights_file: File name of the ImageNet weights without the top in the Keras cache;
            "{size}" stands for the weights' input size (MobileNetV2 only).
        weights_origin: URL folder Keras downloads `weights_file` from.
        weights_file_hash: The hash Keras checks after a download (None: Keras checks none).
        weights_sizes: Input sizes with their own weights file; other sizes load the 224 one
            (Keras's rule). Empty when one file serves every size.
        num_params: Parameters of the base without its top (the same for every input size).
        num_layers: Layers of the base without its top, as FreezeLab's layer tree counts them.
        description: One or two sentences for the model card.
        imagenet_stddev_rescaling: Whether Keras adds a `Rescaling(1/sqrt(stddev))` after
            the model's Normalization layer when it loads ImageNet weights (EfficientNet).
    """

    key: str
    title: str
    family: str
    builder: str
    builder_arguments: tuple[tuple[str, Any], ...]
    default_input_size: int
    input_sizes: tuple[int, ...]
    min_input_size: int
    preprocessing: str
    weights_file: str
    weights_origin: str
    weights_file_hash: str | None
    weights_sizes: tuple[int, ...]
    num_params: int
    num_layers: int
    description: str
    imagenet_stddev_rescaling: bool = False

    def weights_file_name(self, input_size: int) -> str:
        """The cache file name of the ImageNet weights used at `input_size`.

        Args:
            input_size: Input height and width.

        Returns:
            The file name Keras uses in `~/.keras/models`.

        Example:
        >>> APPLICATION_ENTRIES["mobilenet_v2_035"].weights_file_name(96)
        'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5'
        """
        weights_size = input_size if input_size in self.weights_sizes else 224
        return self.weights_file.format(size=weights_size)

    def weights_url(self, input_size: int) -> str:
        """The URL Keras downloads the weights used at `input_size` from."""
        return self.weights_origin + self.weights_file_name(input_size)


def _mobilenet_v2(alpha: float, key: str, num_params: int) -> ApplicationEntry:
    return ApplicationEntry(
        key=key,
        title=f"MobileNetV2 (alpha {alpha:g})",
        family="mobilenet_v2",
        builder="MobileNetV2",
        builder_arguments=(("alpha", alpha),),
        default_input_size=96,
        input_sizes=(96, 128, 160, 192, 224),
        min_input_size=32,
        preprocessing="tf",
        weights_file=(
            f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{{size}}_no_top.h5"
        ),
        weights_origin=_KERAS_APPLICATIONS_URL + "mobilenet_v2/",
        weights_file_hash=None,
        weights_sizes=(96, 128, 160, 192, 224),
        num_params=num_params,
        num_layers=154,
        description=(
            f"Inverted residual blocks with depthwise convolutions, width multiplier {alpha:g}. "
            "ImageNet weights exist for 96, 128, 160, 192 and 224 px; other sizes use the "
            "224 px weights. Inputs are scaled to [-1, 1]."
        ),
    )


_ENTRIES: tuple[ApplicationEntry, ...] = (
    _mobilenet_v2(0.35, "mobilenet_v2_035", 410_208),
    _mobilenet_v2(1.0, "mobilenet_v2", 2_257_984),
    ApplicationEntry(
        key="mobilenet_v3_small",
        title="MobileNetV3Small",
        family="mobilenet_v3",
        builder="MobileNetV3Small",
        builder_arguments=(),
        default_input_size=96,
        input_sizes=_CPU_SIZES,
        min_input_size=32,
        preprocessing="none",
        weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        weights_origin=_KERAS_APPLICATIONS_URL + "mobilenet_v3/",
        weights_file_hash="d3e8ec802a04aa4fc771ee12a9a9b836",
        weights_sizes=(),
        num_params=939_120,
        num_layers=157,
        description=(
            "A small, fast mobile network with squeeze-and-excitation and hard-swish. Its "
            "rescaling to [-1, 1] is built into the model; one weights file (trained at "
            "224 px) serves every input size."
        ),
    ),
    ApplicationEntry(
        key="resnet50",
        title="ResNet50",
        family="resnet50",
        builder="ResNet50",
        builder_arguments=(),
        default_input_size=96,
        input_sizes=_CPU_SIZES,
        min_input_size=32,
        preprocessing="caffe",
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_origin=_KERAS_APPLICATIONS_URL + "resnet/",
        weights_file_hash="4d473c1dd8becc155b73f8504c6f6626",
        weights_sizes=(),
        num_params=23_587_712,
        num_layers=175,
        description=(
            "A 50-layer residual network. Inputs are converted to BGR and centred on "
            "ImageNet's mean pixel (Caffe style)."
        ),
    ),
    ApplicationEntry(
        key="efficientnet_b0",
        title="EfficientNetB0",
        family="efficientnet",
        builder="EfficientNetB0",
        builder_arguments=(),
        default_input_size=96,
        input_sizes=_CPU_SIZES,
        min_input_size=32,
        preprocessing="none",
        weights_file="efficientnetb0_notop.h5",
        weights_origin="https://storage.googleapis.com/keras-applications/",
        weights_file_hash="50bc09e76180e00e4465e1a485ddc09d",
        weights_sizes=(),
        num_params=4_049_571,
        num_layers=237,
        description=(
            "Compound-scaled mobile blocks with squeeze-and-excitation. Its normalisation is "
            "built into the model, so it takes [0, 255] pixels."
        ),
        imagenet_stddev_rescaling=True,
    ),
    ApplicationEntry(
        key="densenet121",
        title="DenseNet121",
        family="densenet",
        builder="DenseNet121",
        builder_arguments=(),
        default_input_size=96,
        input_sizes=_CPU_SIZES,
        min_input_size=32,
        preprocessing="torch",
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_origin=_KERAS_APPLICATIONS_URL + "densenet/",
        weights_file_hash="30ee3e1110167f948a6b9946edeeb738",
        weights_sizes=(),
        num_params=7_037_504,
        num_layers=427,
        description=(
            "Densely connected blocks: every layer sees the outputs of all earlier layers of "
            "its block. Inputs are normalised with ImageNet's mean and standard deviation."
        ),
    ),
    ApplicationEntry(
        key="vgg16",
        title="VGG16",
        family="vgg16",
        builder="VGG16",
        builder_arguments=(),
        default_input_size=64,
        input_sizes=_CPU_SIZES,
        min_input_size=32,
        preprocessing="caffe",
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_origin=_KERAS_APPLICATIONS_URL + "vgg16/",
        weights_file_hash="6d6bbae143d832006294945121d1f1fc",
        weights_sizes=(),
        num_params=14_714_688,
        num_layers=19,
        description=(
            "Thirteen plain 3x3 convolutions in five blocks: few layers, many parameters. "
            "Inputs are converted to BGR and centred on ImageNet's mean pixel (Caffe style)."
        ),
    ),
    ApplicationEntry(
        key="xception",
        title="Xception",
        family="xception",
        builder="Xception",
        builder_arguments=(),
        default_input_size=96,
        input_sizes=(71, 96, 128, 160, 224, 299),
        min_input_size=71,
        preprocessing="tf",
        weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_origin=_KERAS_APPLICATIONS_URL + "xception/",
        weights_file_hash="b0042744bf5b25fce3cb969f33bebb97",
        weights_sizes=(),
        num_params=20_861_480,
        num_layers=132,
        description=(
            "Depthwise separable convolutions with residual connections (at least 71 px). "
            "Inputs are scaled to [-1, 1]."
        ),
    ),
    ApplicationEntry(
        key="convnext_tiny",
        title="ConvNeXtTiny",
        family="convnext",
        builder="ConvNeXtTiny",
        builder_arguments=(),
        default_input_size=64,
        input_sizes=_CPU_SIZES,
        min_input_size=32,
        preprocessing="none",
        weights_file="convnext_tiny_notop.h5",
        weights_origin=_KERAS_APPLICATIONS_URL + "convnext/",
        weights_file_hash="d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
        weights_sizes=(),
        num_params=27_820_128,
        num_layers=141,
        description=(
            "A modernised ResNet with large depthwise kernels and LayerNormalization; its "
            "stem and downsampling stages are nested models. Normalisation is built in, so "
            "it takes [0, 255] pixels."
        ),
    ),
)

APPLICATION_ENTRIES: Mapping[str, ApplicationEntry] = MappingProxyType(
    {entry.key: entry for entry in _ENTRIES}
)
APPLICATIONS: Mapping[str, str] = MappingProxyType({entry.key: entry.title for entry in _ENTRIES})


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


def get_application_entry(key: str) -> ApplicationEntry:
    """Looks up a catalogue entry.

    Args:
        key: A key of `APPLICATIONS`, e.g. "resnet50".

    Returns:
        The `ApplicationEntry`.

    Raises:
        ValueError: For an unknown key (the message lists the valid ones).

    Example:
    >>> get_application_entry("vgg16").preprocessing
    'caffe'
    """
    if key not in APPLICATION_ENTRIES:
        raise ValueError(
            f"Unknown keras.applications model {key!r}. Expected one of "
            f"{list(APPLICATION_ENTRIES)}."
        )
    return APPLICATION_ENTRIES[key]


def validate_input_size(key: str, input_size: int) -> int:
    """Checks an input size (height = width) for a catalogue model.

    Args:
        key: A key of `APPLICATIONS`.
        input_size: Input height and width in pixels.

    Returns:
        The size as an `int`.

    Raises:
        ValueError: When the size is not an integer between the model's minimum and
            `MAX_INPUT_SIZE`.

    Example:
    >>> validate_input_size("xception", 96)
    96
    """
    entry = get_application_entry(key)
    return int(
        check_whole_number(
            "input_size",
            input_size,
            entry.min_input_size,
            MAX_INPUT_SIZE,
            hint=f"{entry.title} takes square images from {entry.min_input_size} to "
            f"{MAX_INPUT_SIZE} px; choose e.g. one of {list(entry.input_sizes)}.",
        )
    )


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
