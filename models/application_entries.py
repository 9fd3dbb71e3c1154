"""The keras.applications catalogue: which ImageNet bases FreezeLab offers, and their facts.

Each `ApplicationEntry` records what building and loading its base needs (the Keras builder,
the accepted input sizes, the preprocessing mode, the ImageNet weights file, its URL and hash)
and what the dashboard shows (title, description, parameter and layer counts). Building a base
and loading its weights is `models.applications`, which re-exports this module's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from models.validation import check_whole_number

MAX_INPUT_SIZE = 512
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
