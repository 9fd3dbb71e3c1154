"""Reproduces models/bundled_digits_cnn.keras and its metadata from scikit-learn's digits 0-4."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from models.bundled import (  # noqa: E402
    BUNDLED_METADATA_PATH,
    BUNDLED_MODEL_PATH,
    PRETRAINED_DIGITS,
    build_digits_cnn,
    load_bundled_model,
)
from models.datasets import load_digits_task  # noqa: E402
from models.splits import train_validation_split  # noqa: E402

SEED = 0
EPOCHS = 25
BATCH_SIZE = 32
LEARNING_RATE = 0.003
VALIDATION_FRACTION = 0.2


def main() -> int:
    """Trains, saves, reloads and checks the bundled model, then writes its metadata."""
    keras.utils.set_random_seed(SEED)
    dataset = load_digits_task(PRETRAINED_DIGITS)
    x_train, y_train, x_validation, y_validation = train_validation_split(
        dataset.x, dataset.y, validation_fraction=VALIDATION_FRACTION, seed=SEED
    )

    model = build_digits_cnn(num_classes=dataset.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_validation, y_validation),
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        verbose=2,
    )
    model.save(BUNDLED_MODEL_PATH)

    # Measure on the reloaded file, exactly as users and tests will see it.
    reloaded = load_bundled_model()
    probabilities = reloaded.predict(x_validation, batch_size=256, verbose=0)
    predictions = np.argmax(probabilities, axis=-1)
    validation_accuracy = float(np.mean(predictions == y_validation))
    train_predictions = np.argmax(reloaded.predict(x_train, batch_size=256, verbose=0), -1)
    train_accuracy = float(np.mean(train_predictions == y_train))

    def count(weights: list) -> int:
        return int(sum(np.prod(weight.shape) for weight in weights))

    metadata = {
        "model_name": reloaded.name,
        "file": BUNDLED_MODEL_PATH.name,
        "dataset": "sklearn.datasets.load_digits",
        "digits": list(PRETRAINED_DIGITS),
        "input_shape": list(dataset.input_shape),
        "seed": SEED,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "optimizer": "adam",
        "learning_rate": LEARNING_RATE,
        "validation_fraction": VALIDATION_FRACTION,
        "split_seed": SEED,
        "train_size": len(y_train),
        "validation_size": len(y_validation),
        "train_accuracy": round(train_accuracy, 6),
        "validation_accuracy": round(validation_accuracy, 6),
        "final_val_loss": round(float(history.history["val_loss"][-1]), 6),
        "trainable_params": count(reloaded.trainable_weights),
        "non_trainable_params": count(reloaded.non_trainable_weights),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "script": "scripts/train_bundled_model.py",
    }
    BUNDLED_METADATA_PATH.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    size_kib = BUNDLED_MODEL_PATH.stat().st_size / 1024
    print(f"Saved {BUNDLED_MODEL_PATH} ({size_kib:.0f} KiB) and {BUNDLED_METADATA_PATH.name}")
    print(f"Validation accuracy on digits 0-4: {validation_accuracy:.4f}")
    if validation_accuracy < 0.9:
        print("Validation accuracy is below 0.9: the bundled model is not good enough.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
