"""Which Keras a measurement ran on, and what is known to differ between Keras versions.

FreezeLab's lessons and pitfalls measure the Keras that is installed; they never assume which
way a version-dependent behaviour goes. Every result carries the `KerasEnvironment` it was
measured on, and where the answer is known to change between releases, a `VersionNote` says
how and cites the source, next to the measured result.

Example:
>>> installed_keras().label
'Keras 3.15.1 · TensorFlow 2.21.0'
>>> VERSION_NOTES["training_false"].source
'keras-team/keras#23364'
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import keras

_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}
_BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch", "numpy": "NumPy"}
_VERSION_PATTERN = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


@dataclass(frozen=True)
class KerasEnvironment:
    """The Keras version and backend a measurement ran on.

    Attributes:
        keras_version: e.g. "3.15.1".
        backend: Keras's backend name, e.g. "tensorflow" or "jax".
        backend_version: The backend library's version, e.g. "2.21.0" ("" when unknown).
    """

    keras_version: str
    backend: str
    backend_version: str = ""

    @property
    def label(self) -> str:
        """e.g. "Keras 3.15.1 · TensorFlow 2.21.0"."""
        backend = _BACKEND_NAMES.get(self.backend, self.backend)
        version = f" {self.backend_version}" if self.backend_version else ""
        return f"Keras {self.keras_version} · {backend}{version}"

    @property
    def version(self) -> tuple[int, int, int]:
        """The Keras version as numbers, e.g. (3, 15, 1)."""
        return version_tuple(self.keras_version)


@functools.cache
def installed_keras() -> KerasEnvironment:
    """The Keras this process runs: its version, backend and backend version.

    Example:
    >>> installed_keras().backend
    'tensorflow'
    """
    backend = keras.backend.backend()
    backend_version = ""
    try:
        module = importlib.import_module(_BACKEND_MODULES.get(backend, backend))
        backend_version = str(getattr(module, "__version__", ""))
    except ImportError:  # a backend without its library cannot run; say nothing then
        backend_version = ""
    return KerasEnvironment(keras.__version__, backend, backend_version)


def version_tuple(text: str) -> tuple[int, int, int]:
    """Reads "3.15.1", "3.16.0.dev2026" or "3.16" as (major, minor, patch).

    Raises:
        ValueError: For text that does not start with a version number.

    Example:
    >>> version_tuple("3.16.0.dev2026081"), version_tuple("3.16")
    ((3, 16, 0), (3, 16, 0))
    """
    match = _VERSION_PATTERN.match(str(text).strip())
    if match is None:
        raise ValueError(f"Expected a version such as '3.15.1'; received {text!r}.")
    return tuple(int(part or 0) for part in match.groups())  # type: ignore[return-value]


@dataclass(frozen=True)
class VersionNote:
    """What is known to differ between Keras versions for one behaviour, with its source.

    Attributes:
        text: The known difference, in plain words (it never replaces the measurement).
        source: Where it comes from, e.g. "keras-team/keras#23364".
        url: A link to the source.
    """

    text: str
    source: str
    url: str


VERSION_NOTES: Mapping[str, VersionNote] = MappingProxyType(
    {
        "training_false": VersionNote(
            text=(
                "Known to differ by version: on Keras 3.15 and earlier, the training flag "
                "that `fit` passes wins over `base(x, training=False)`, so BatchNormalization "
                "in a trainable base still updates its moving statistics and a head Dropout "
                "still drops. After 3.15.1, keras-team/keras#23364 makes `training=False` "
                "win, for the base and for every layer called after it (a head Dropout then "
                "drops nothing during `fit`)."
            ),
            source="keras-team/keras#23364",
            url="https://github.com/keras-team/keras/pull/23364",
        ),
        "stale_compile": VersionNote(
            text=(
                "Known to differ by version and backend: Keras keeps the set of trainable "
                "variables of the last `compile()` (TensorFlow: keras-team/keras#22787, in "
                "3.15); on JAX, 3.15.1 stops the second `fit` with a ValueError about the "
                "optimizer's variables instead (measured). Keras 3.15.1 and its development "
                "branch hold a warning for this ('A layer's `trainable` state has changed "
                "since the model was compiled...') that is never shown: its call sits after "
                "a `raise` in `Trainer._assert_compile_called` (measured in the source)."
            ),
            source="keras-team/keras#22787",
            url="https://github.com/keras-team/keras/pull/22787",
        ),
    }
)

__all__ = ["VERSION_NOTES", "KerasEnvironment", "VersionNote", "installed_keras", "version_tuple"]
