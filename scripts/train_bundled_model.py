"""Reproduces the bundled pretrained models and their metadata from scikit-learn's digits 0-4.

Usage: `python scripts/train_bundled_model.py [cnn] [attention] [--output-dir DIR]` (both models
when none is named; `make bundled` runs it). Each model is trained with a fixed seed on the same
stratified split of digits 0-4, saved as `.keras`, reloaded from the file and measured there,
exactly as users and tests will see it; the measurements go into the `.json` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from models import bundled_attention  # noqa: E402
from models.bundled import (  # noqa: E402
    BUNDLED_MODEL_PATH,
    PRETRAINED_DIGITS,
    build_digits_cnn,
    load_model_file,
)
from models.datasets import load_digits_task  # noqa: E402
from models.splits import train_validation_split  # noqa: E402

SEED = 0
BATCH_SIZE = 32
VALIDATION_FRACTION = 0.2
MINIMUM_ACCURACY = 0.9
SCRIPT = "scripts/train_bundled_model.py"


@dataclass(frozen=True)
class BundledRecipe:
    """How one bundled model is built and trained, and where its file goes.

    Attributes:
        name: Command-line name ("cnn" or "attention").
        build: Builds the untrained model for a number of classes.
        model_path: The `.keras` file in the repository; its `.json` metadata lies beside it.
        epochs: Training epochs.
        learning_rate: Adam's learning rate.
        architecture: Extra metadata that describes the architecture.
    """

    name: str
    build: Callable[[int], keras.Model]
    model_path: Path
    epochs: int
    learning_rate: float
    architecture: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, BundledRecipe] = {
    "cnn": BundledRecipe("cnn", build_digits_cnn, BUNDLED_MODEL_PATH, 25, 0.003),
    "attention": BundledRecipe(
        "attention",
        bundled_attention.build_digits_attention,
        bundled_attention.ATTENTION_MODEL_PATH,
        30,
        0.003,
        {
            "patch_size": bundled_attention.PATCH_SIZE,
            "num_patches": bundled_attention.NUM_PATCHES,
            "embedding_dim": bundled_attention.EMBEDDING_DIM,
            "num_heads": bundled_attention.NUM_HEADS,
            "num_blocks": bundled_attention.NUM_BLOCKS,
            "feed_forward_dim": bundled_attention.FEED_FORWARD_DIM,
        },
    ),
}


def count_parameters(weights: list) -> int:
    """Number of scalars in a list of weights (Keras's own way of counting)."""
    return int(sum(np.prod(weight.shape) for weight in weights))


def accuracy_of(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose most probable class is the label."""
    predictions = np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1)
    return float(np.mean(predictions == y))


def train_bundled(recipe: BundledRecipe, output_dir: Path | None = None) -> dict[str, Any]:
    """Trains, saves, reloads and measures one bundled model, then writes its metadata.

    Args:
        recipe: What to build and how to train it.
        output_dir: Folder for the `.keras` and `.json` files; None for `models/` (the files
            FreezeLab ships).

    Returns:
        The metadata written to the `.json` file.
    """
    model_path = recipe.model_path if output_dir is None else output_dir / recipe.model_path.name
    metadata_path = model_path.with_suffix(".json")
    keras.utils.set_random_seed(SEED)
    dataset = load_digits_task(PRETRAINED_DIGITS)
    x_train, y_train, x_validation, y_validation = train_validation_split(
        dataset.x, dataset.y, validation_fraction=VALIDATION_FRACTION, seed=SEED
    )

    model = recipe.build(dataset.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=recipe.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_validation, y_validation),
        epochs=recipe.epochs,
        batch_size=BATCH_SIZE,
        verbose=2,
    )
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(model_path)

    # Measure on the reloaded file, exactly as users and tests will see it.
    reloaded = load_model_file(model_path)
    metadata = {
        "model_name": reloaded.name,
        "file": model_path.name,
        "dataset": "sklearn.datasets.load_digits",
        "digits": list(PRETRAINED_DIGITS),
        "input_shape": list(dataset.input_shape),
        "seed": SEED,
        "epochs": recipe.epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": "adam",
        "learning_rate": recipe.learning_rate,
        "validation_fraction": VALIDATION_FRACTION,
        "split_seed": SEED,
        "train_size": len(y_train),
        "validation_size": len(y_validation),
        "train_accuracy": round(accuracy_of(reloaded, x_train, y_train), 6),
        "validation_accuracy": round(accuracy_of(reloaded, x_validation, y_validation), 6),
        "final_val_loss": round(float(history.history["val_loss"][-1]), 6),
        "trainable_params": count_parameters(reloaded.trainable_weights),
        "non_trainable_params": count_parameters(reloaded.non_trainable_weights),
        **recipe.architecture,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "script": f"{SCRIPT} {recipe.name}",
    }
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    size_kib = model_path.stat().st_size / 1024
    print(f"Saved {model_path} ({size_kib:.0f} KiB) and {metadata_path.name}")
    print(f"Validation accuracy on digits 0-4: {metadata['validation_accuracy']:.4f}")
    return metadata


def main(argv: list[str] | None = None) -> int:
    """Trains the bundled models named on the command line (all of them by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", metavar="MODEL", help=f"any of {', '.join(RECIPES)} (default: all)"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="default: models/ (the shipped files)"
    )
    arguments = parser.parse_args(argv)
    unknown = [name for name in arguments.models if name not in RECIPES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; expected any of {list(RECIPES)}")
    status = 0
    for name in arguments.models or list(RECIPES):
        metadata = train_bundled(RECIPES[name], arguments.output_dir)
        if metadata["validation_accuracy"] < MINIMUM_ACCURACY:
            print(
                f"Validation accuracy of the {name} model is below {MINIMUM_ACCURACY}: the "
                "bundled model is not good enough."
            )
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
