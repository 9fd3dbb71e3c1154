"""A base model many sessions share (`ModelTemplate`) and its key (`ModelKey`), made in one place.

Every template has a stable key that says where its base came from:

| kind          | key                                   | example                        |
|---------------|---------------------------------------|--------------------------------|
| bundled       | one of `BUNDLED_MODEL_KEYS`           | "bundled_digits_cnn",          |
|               |                                       | "bundled_digits_attention"     |
| application   | "<catalogue key>@<input size>:<weights>" | "resnet50@96:imagenet"       |
|               | (weights "imagenet" or "random")      | "mobilenet_v2_035@96:random"   |
| upload        | "upload:<file>:<cut layer>"           | "upload:digits.keras:dense_1"  |
| dense_base    | "dense_base:<number of features>"     | "dense_base:4"                 |

`ModelKey` builds these strings (`ModelKey.application(...).format()`) and reads them back
(`parse_model_key(text)`); no other module splits or joins them by hand.
"""

from __future__ import annotations

import copy
import enum
import re
from dataclasses import dataclass

import keras
import numpy as np

from models.tree import LayerTree
from models.validation import ArgumentTypeError, check_whole_number

BUNDLED_MODEL_KEY = "bundled_digits_cnn"  # the bundled digits CNN, FreezeLab's default base
BUNDLED_ATTENTION_KEY = "bundled_digits_attention"  # the bundled tiny Transformer
BUNDLED_MODEL_KEYS: tuple[str, ...] = (BUNDLED_MODEL_KEY, BUNDLED_ATTENTION_KEY)
IMAGENET_WEIGHTS = "imagenet"
RANDOM_WEIGHTS = "random"
WEIGHT_CHOICES: tuple[str, ...] = (IMAGENET_WEIGHTS, RANDOM_WEIGHTS)
UPLOAD_PREFIX = "upload:"
DENSE_BASE_PREFIX = "dense_base:"

_CATALOGUE_KEY = re.compile(r"[A-Za-z0-9_]+")
_APPLICATION_KEY = re.compile(r"([A-Za-z0-9_]+)@([0-9]+):(imagenet|random)")
_DENSE_BASE_KEY = re.compile(r"dense_base:([0-9]+)")
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_.-]+")
_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")
MODEL_KEY_FORMS = (  # the forms, in words, for messages
    f"{' or '.join(repr(key) for key in BUNDLED_MODEL_KEYS)}, "
    "'<catalogue key>@<input size>:imagenet' or ':random' (e.g. "
    "'resnet50@96:imagenet'), 'upload:<file>:<cut layer>' or 'dense_base:<number of features>'"
)


class ModelKind(enum.StrEnum):
    """Where a template's base came from."""

    BUNDLED = "bundled"
    APPLICATION = "application"
    UPLOAD = "upload"
    DENSE_BASE = "dense_base"


_KEY_FIELDS = ("catalogue_key", "input_size", "pretrained", "filename", "cut_layer", "num_features")
_FIELDS_OF_KIND: dict[ModelKind, frozenset[str]] = {
    ModelKind.BUNDLED: frozenset({"catalogue_key"}),
    ModelKind.APPLICATION: frozenset({"catalogue_key", "input_size", "pretrained"}),
    ModelKind.UPLOAD: frozenset({"filename", "cut_layer"}),
    ModelKind.DENSE_BASE: frozenset({"num_features"}),
}


@dataclass(frozen=True)
class ModelKey:
    """A template key, parsed: what kind of base it names and the parts that say which.

    Build one with `bundled()`, `application(...)`, `upload(...)` or `dense_base(...)`, turn it
    into the key string with `format()` (or `str()`), and read a string with `parse_model_key`.
    Fields that do not belong to the kind are None.

    Attributes:
        kind: A `ModelKind`.
        catalogue_key: The catalogue key: one of `BUNDLED_MODEL_KEYS` or a keras.applications
            key such as "resnet50"; None for uploads and Dense bases.
        input_size: keras.applications input height and width.
        pretrained: keras.applications weights: ImageNet (True) or random initialisation.
        filename: Uploaded model's file name (letters, digits, "_", "." and "-" only).
        cut_layer: Uploaded model's layer that ends the base.
        num_features: A Dense base's number of input features.

    Example:
    >>> ModelKey.application("resnet50", 96, pretrained=False).format()
    'resnet50@96:random'
    >>> parse_model_key("upload:digits.keras:dense_1").cut_layer
    'dense_1'
    """

    kind: ModelKind
    catalogue_key: str | None = None
    input_size: int | None = None
    pretrained: bool | None = None
    filename: str | None = None
    cut_layer: str | None = None
    num_features: int | None = None

    def __post_init__(self) -> None:
        try:
            kind = ModelKind(self.kind)
        except ValueError:
            raise ValueError(
                f"`kind` must be one of {[kind.value for kind in ModelKind]}. "
                f"Received: kind={self.kind!r}"
            ) from None
        object.__setattr__(self, "kind", kind)
        self._refuse_fields_of_other_kinds()
        if kind is ModelKind.BUNDLED and self.catalogue_key not in BUNDLED_MODEL_KEYS:
            raise ValueError(
                f"A bundled model's `catalogue_key` must be one of {list(BUNDLED_MODEL_KEYS)}. "
                f"Received: catalogue_key={self.catalogue_key!r}"
            )
        if kind is ModelKind.APPLICATION:
            self._check_application_fields()
        if kind is ModelKind.UPLOAD:
            self._check_upload_fields()
        if kind is ModelKind.DENSE_BASE:
            number = check_whole_number("num_features", self.num_features, 1)
            object.__setattr__(self, "num_features", number)

    def _refuse_fields_of_other_kinds(self) -> None:
        """Raises for the first field that is set but does not belong to the key's kind."""
        allowed = _FIELDS_OF_KIND[self.kind]
        for name in _KEY_FIELDS:
            value = getattr(self, name)
            if name not in allowed and value is not None:
                raise ValueError(
                    f"A {self.kind.value} model key has no `{name}`; expected {name}=None. "
                    f"Received: {name}={value!r}"
                )

    def _check_application_fields(self) -> None:
        """Checks a keras.applications key's catalogue key, input size and weights."""
        key = self.catalogue_key
        if not isinstance(key, str) or not _CATALOGUE_KEY.fullmatch(key):
            raise ValueError(
                "`catalogue_key` must be a keras.applications catalogue key of letters, "
                f"digits and '_', e.g. 'resnet50'. Received: catalogue_key={key!r}"
            )
        size = check_whole_number("input_size", self.input_size, 1)
        object.__setattr__(self, "input_size", size)
        if not isinstance(self.pretrained, bool):
            raise ArgumentTypeError(
                "`pretrained` must be True (ImageNet weights) or False (random "
                f"initialisation). Received: pretrained={self.pretrained!r}"
            )

    def _check_upload_fields(self) -> None:
        """Checks an uploaded model key's file name and cut layer."""
        if not isinstance(self.filename, str) or not _SAFE_FILENAME.fullmatch(self.filename):
            raise ValueError(
                "`filename` must be a file name of letters, digits, '_', '.' and '-' (use "
                f"ModelKey.upload, which replaces the others). Received: filename="
                f"{self.filename!r}"
            )
        if not isinstance(self.cut_layer, str) or not self.cut_layer:
            raise ValueError(
                "`cut_layer` must be the name of the layer that ends the base. Received: "
                f"cut_layer={self.cut_layer!r}"
            )

    # ------------------------------------------------------------------------ building
    @classmethod
    def bundled(cls, catalogue_key: str = BUNDLED_MODEL_KEY) -> ModelKey:
        """The key of a model bundled with FreezeLab (the digits CNN unless told otherwise).

        Args:
            catalogue_key: One of `BUNDLED_MODEL_KEYS`.

        Returns:
            The `ModelKey`.

        Example:
        >>> ModelKey.bundled().format()
        'bundled_digits_cnn'
        >>> ModelKey.bundled("bundled_digits_attention").format()
        'bundled_digits_attention'
        """
        return cls(ModelKind.BUNDLED, catalogue_key=catalogue_key)

    @classmethod
    def application(cls, catalogue_key: str, input_size: int, pretrained: bool) -> ModelKey:
        """The key of a keras.applications base at a size, with ImageNet or random weights.

        Args:
            catalogue_key: A key of `models.applications.APPLICATIONS`, e.g. "resnet50".
            input_size: Input height and width.
            pretrained: True for ImageNet weights, False for random initialisation.

        Returns:
            The `ModelKey`.

        Example:
        >>> str(ModelKey.application("resnet50", 96, True))
        'resnet50@96:imagenet'
        """
        return cls(
            ModelKind.APPLICATION,
            catalogue_key=catalogue_key,
            input_size=input_size,
            pretrained=pretrained,
        )

    @classmethod
    def upload(cls, filename: str, cut_layer: str) -> ModelKey:
        """The key of an uploaded model cut at a layer.

        Characters other than letters, digits, "_", "." and "-" in the file name become "_",
        so the key stays one line that splits back into its parts.

        Args:
            filename: The uploaded file's name (without folders), e.g. "my model.keras".
            cut_layer: The top-level layer that ends the base.

        Returns:
            The `ModelKey`.

        Example:
        >>> ModelKey.upload("my model.keras", "dense").format()
        'upload:my_model.keras:dense'
        """
        if not isinstance(filename, str):
            raise ArgumentTypeError(
                f"`filename` must be the uploaded file's name, a string. Received: "
                f"filename={filename!r}"
            )
        safe = _UNSAFE_FILENAME_CHARACTERS.sub("_", filename)
        return cls(ModelKind.UPLOAD, filename=safe, cut_layer=cut_layer)

    @classmethod
    def dense_base(cls, num_features: int) -> ModelKey:
        """The key of FreezeLab's Dense base for a table of `num_features` features.

        Example:
        >>> ModelKey.dense_base(4).format()
        'dense_base:4'
        """
        return cls(ModelKind.DENSE_BASE, num_features=num_features)

    # ------------------------------------------------------------------------ reading
    @property
    def weights(self) -> str | None:
        """The weights word of a keras.applications key ("imagenet" or "random"), else None."""
        if self.kind is not ModelKind.APPLICATION:
            return None
        return IMAGENET_WEIGHTS if self.pretrained else RANDOM_WEIGHTS

    def format(self) -> str:
        """The key as a string, e.g. "resnet50@96:imagenet"; `parse_model_key` reads it back.

        Example:
        >>> parse_model_key(ModelKey.dense_base(3).format()) == ModelKey.dense_base(3)
        True
        """
        if self.kind is ModelKind.BUNDLED:
            return self.catalogue_key
        if self.kind is ModelKind.APPLICATION:
            return f"{self.catalogue_key}@{self.input_size}:{self.weights}"
        if self.kind is ModelKind.UPLOAD:
            return f"{UPLOAD_PREFIX}{self.filename}:{self.cut_layer}"
        return f"{DENSE_BASE_PREFIX}{self.num_features}"

    def __str__(self) -> str:
        return self.format()


def parse_model_key(text: str) -> ModelKey:
    """Reads a template key (see the module's table) into a `ModelKey`.

    It checks the form only: whether "resnet50" is in the catalogue is for
    `models.catalogue` / `models.applications` to say.

    Args:
        text: A key, e.g. `workspace.template.key` or a run config's `template_key`.

    Returns:
        The `ModelKey`; `parse_model_key(text).format() == text` for every valid key.

    Raises:
        ValueError: When `text` has none of the forms (a `TypeError` too when it is not a
            string).

    Example:
    >>> key = parse_model_key("mobilenet_v2_035@96:random")
    >>> key.kind, key.catalogue_key, key.input_size, key.pretrained
    (<ModelKind.APPLICATION: 'application'>, 'mobilenet_v2_035', 96, False)
    """
    if not isinstance(text, str):
        raise ArgumentTypeError(
            f"`key` must be a model key string: {MODEL_KEY_FORMS}. Received: key={text!r}"
        )
    if text in BUNDLED_MODEL_KEYS:
        return ModelKey.bundled(text)
    if text.startswith(UPLOAD_PREFIX):
        filename, separator, cut_layer = text.removeprefix(UPLOAD_PREFIX).partition(":")
        if separator and _SAFE_FILENAME.fullmatch(filename) and cut_layer:
            return ModelKey(ModelKind.UPLOAD, filename=filename, cut_layer=cut_layer)
    elif match := _DENSE_BASE_KEY.fullmatch(text):
        if int(match.group(1)) >= 1:
            return ModelKey.dense_base(int(match.group(1)))
    elif match := _APPLICATION_KEY.fullmatch(text):
        catalogue_key, size, weights = match.groups()
        if int(size) >= 1:
            return ModelKey.application(catalogue_key, int(size), weights == IMAGENET_WEIGHTS)
    raise ValueError(f"`key` must be a model key: {MODEL_KEY_FORMS}. Received: key={text!r}")


@dataclass(frozen=True, eq=False)
class ModelTemplate:
    """A read-only base model that many sessions can copy: its config and weights.

    Attributes:
        key: Stable id, e.g. "bundled_digits_cnn".
        title: Human name for menus.
        description: One or two sentences for the model card.
        config: `base.get_config()`; never mutated.
        weights: `base.get_weights()`; read-only arrays, never mutated.
        class_name: The base's class name (e.g. "Sequential" or "Functional").
        pretrained: Whether the weights were learned (False for random initialisation).
        input_shape: The base's input shape without the batch axis.
        num_layers: Number of layers of the base (nested ones included).
        num_params: Parameters of the base.
        rescaling: Optional (scale, offset) that maps [0, 1] images to what the base expects.
        preprocessing: Optional `ImagenetPreprocessing` mode ("tf", "torch", "caffe" or
            "none") that maps [0, 1] images to what a keras.applications base expects.
    """

    key: str
    title: str
    description: str
    config: dict
    weights: tuple[np.ndarray, ...]
    class_name: str
    pretrained: bool
    input_shape: tuple
    num_layers: int
    num_params: int
    rescaling: tuple[float, float] | None = None
    preprocessing: str | None = None

    @classmethod
    def from_model(
        cls,
        base: keras.Model,
        *,
        key: str,
        title: str,
        description: str,
        pretrained: bool,
        rescaling: tuple[float, float] | None = None,
        preprocessing: str | None = None,
    ) -> ModelTemplate:
        """Captures a base model as a template (copies its config and weights).

        Args:
            base: A built Keras model, used as the feature extractor.
            key: Stable id.
            title: Human name.
            description: Short description.
            pretrained: Whether its weights were learned.
            rescaling: Optional (scale, offset) for inputs in [0, 1].
            preprocessing: Optional `ImagenetPreprocessing` mode for inputs in [0, 1].

        Returns:
            A `ModelTemplate`.

        Example:
        >>> template = ModelTemplate.from_model(load_bundled_base(), key="bundled",
        ...                                     title="Bundled", description="", pretrained=True)
        """
        weights = []
        for array in base.get_weights():
            copy = np.array(array, copy=True)
            copy.setflags(write=False)
            weights.append(copy)
        tree = LayerTree(base)
        return cls(
            key=key,
            title=title,
            description=description,
            config=base.get_config(),
            weights=tuple(weights),
            class_name=type(base).__name__,
            pretrained=pretrained,
            input_shape=tuple(base.input_shape[1:]),
            num_layers=len(tree) - 1,
            num_params=tree.totals().total,
            rescaling=rescaling,
            preprocessing=preprocessing,
        )

    def instantiate(self) -> keras.Model:
        """Builds a new, independent copy of the base with the template's weights.

        Returns:
            A fresh Keras model; changing it never affects the template or other copies.
        """
        class_name = self.class_name
        builder = keras.Sequential if class_name == "Sequential" else keras.Model
        # Keras's from_config consumes the dict it is given: hand it a private copy so the
        # shared template can be instantiated again (by every session).
        base = builder.from_config(copy.deepcopy(self.config))
        base.set_weights(list(self.weights))
        return base


__all__ = [
    "BUNDLED_ATTENTION_KEY",
    "BUNDLED_MODEL_KEY",
    "BUNDLED_MODEL_KEYS",
    "DENSE_BASE_PREFIX",
    "IMAGENET_WEIGHTS",
    "MODEL_KEY_FORMS",
    "RANDOM_WEIGHTS",
    "UPLOAD_PREFIX",
    "WEIGHT_CHOICES",
    "ModelKey",
    "ModelKind",
    "ModelTemplate",
    "parse_model_key",
]
