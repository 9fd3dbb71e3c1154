"""Pitfall 11: LoRA on a small CNN saves little: LoRA against head-only and full fine-tuning.

Three runs train the lab model from identical weights, with the same data, batch order,
learning rate and number of epochs (BatchNormalization frozen in all three):

- LoRA: adapters of rank 4 on the base's three Conv2D layers, plus the head;
- head only: the whole base frozen;
- full fine-tuning: every conv kernel and the head.

Each reports Keras's own trainable count (`model.trainable_weights`), its share of full
fine-tuning's, the accuracy on the new task, the seconds an epoch took after the first (which
also builds Keras's training step), and how much of the pretraining task the base still knows.
A conv adapter's `a` matrix has `kernel_height * kernel_width * in_channels * rank` entries, so
on a small CNN's 3x3 convs LoRA trains a sizeable share of the weights, and every step still
runs the full convolutions forward and backward.

Example:
>>> lora, head_only, full = run(seed=0)
>>> lora.numbers["Trainable params (Keras)"], head_only.numbers["Trainable params (Keras)"]
(2249.0, 165.0)
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import keras

from models.pitfalls.lora_lab import LORA_RANK, build_lora_lab_model, trainable_params
from models.pitfalls.results import FINE, NOTE, SURPRISE, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_NAME,
    BASE_PATH,
    HEAD_LEARNING_RATE,
    LabRun,
    accuracy_measurement,
    build_lab_model,
    original_task_accuracy,
)

EPOCHS = 3
LEARNING_RATE = HEAD_LEARNING_RATE
# LoRA "saves little" when it trains at least this share of full fine-tuning's parameters
# (on large transformers, rank-8 LoRA trains well under 1%).
SMALL_SAVING_SHARE = 0.05

LORA = "lora"
HEAD_ONLY = "head_only"
FULL = "full"
WAYS = (LORA, HEAD_ONLY, FULL)

PITFALL = Pitfall(
    key="lora_small_cnn",
    number=11,
    title="LoRA on a small CNN: what it really saves against head-only and full fine-tuning",
    explanation=(
        "LoRA shines on large transformers: a rank-8 adapter on a 4096 x 4096 projection "
        "trains 0.4% of its weights. A convolution's adapter is different: `a` has "
        "`kernel_height * kernel_width * in_channels * rank` entries, so on a small CNN's "
        "3x3 convs LoRA trains a sizeable share of the weights. Measured on MobileNetV2 "
        "(alpha 0.35, BatchNorm frozen, a 10-class head): rank 4 on its 34 1x1 convs trains "
        "43,082 parameters (30,272 in adapters, the rest the head), against 12,810 for the "
        "head only and 394,858 for full fine-tuning. And it saves no compute: every step "
        "still runs the full convolutions forward and backward, plus the adapters. These "
        "three runs measure it on the bundled CNN, from identical weights, with the same "
        "learning rate and epochs."
    ),
    what_to_look_at=(
        "'Trainable params (Keras)' and 'Share of full fine-tuning' (from Keras's own "
        "`trainable_weights`), 'Seconds per epoch' (after the first, which also builds the "
        "training step) and the accuracy after the same epochs. 'Digits 0-4 still "
        "recognised' shows that LoRA keeps the pretrained kernel, not the pretrained "
        "behaviour: the effective kernel changes. The lesson is about cost, not accuracy: at "
        "this learning rate LoRA may well reach the best accuracy (full fine-tuning at a "
        "high rate overwrites the base, see pitfall 3)."
    ),
    fix=(
        "On a small CNN, start with the head only; if that is not enough, fine-tune the top "
        "blocks (or everything) at a low learning rate. Reach for LoRA when the base is "
        "large, memory for optimizer state is the limit, or many tasks share one base."
    ),
)


class _EpochClock(keras.callbacks.Callback):
    """Measures each epoch's wall-clock seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


@dataclasses.dataclass(frozen=True)
class _Measured:
    result: VariantResult
    params: int
    epoch_seconds: float
    accuracy: float
    remembered: float


_LABELS = {
    LORA: f"LoRA rank {LORA_RANK} on the base's convs",
    HEAD_ONLY: "Head only (base frozen)",
    FULL: "Full fine-tuning",
}
_DESCRIPTIONS = {
    LORA: f"LoRA adapters of rank {LORA_RANK} on the 3 convs (kernels frozen) and the head",
    HEAD_ONLY: "The whole base frozen; only the new head",
    FULL: "Every conv kernel and the head",
}


def _train(seed: int, way: str) -> _Measured:
    model = build_lora_lab_model(seed) if way == LORA else build_lab_model(seed)
    run = LabRun(seed, model=model)
    if way == HEAD_ONLY:
        run.tree.set_frozen(BASE_PATH, True)
    else:
        run.tree.freeze_batch_norm()
    params = trainable_params(model)
    clock = _EpochClock()
    history = run.train(EPOCHS, LEARNING_RATE, callbacks=[clock])
    later = clock.seconds[1:] or clock.seconds
    result = run.result(
        label=_LABELS[way],
        description=(
            f"{_DESCRIPTIONS[way]} trained {EPOCHS} epochs at lr {LEARNING_RATE:g} "
            "(BatchNorm frozen)."
        ),
        status=NOTE,
        verdict="",
        measurements=(accuracy_measurement(history),),
        chart_kind="weights",
    )
    return _Measured(
        result=result,
        params=params,
        epoch_seconds=float(statistics.median(later)),
        accuracy=result.numbers["Validation accuracy"],
        remembered=original_task_accuracy(model.get_layer(BASE_NAME)),
    )


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _measurements(measured: _Measured, full: _Measured) -> tuple[Measurement, ...]:
    share = measured.params / full.params
    return (
        Measurement(
            "Trainable params (Keras)",
            float(measured.params),
            f"{measured.params:,}",
            "Sum over `model.trainable_weights` when training starts.",
        ),
        Measurement(
            "Share of full fine-tuning",
            share,
            f"{share:.1%}",
            f"Trainable params divided by full fine-tuning's {full.params:,}.",
        ),
        Measurement(
            "Seconds per epoch",
            measured.epoch_seconds,
            _milliseconds(measured.epoch_seconds),
            "Median wall-clock seconds of the epochs after the first (the first also builds "
            "Keras's training step); drift recording included, as in every run.",
        ),
        Measurement(
            "Digits 0-4 still recognised",
            measured.remembered,
            f"{measured.remembered:.1%}",
            "Accuracy of the base with its original classifier on the digits it was "
            "pretrained on (100% before training).",
        ),
        *measured.result.measurements,
    )


def _lora_verdict(lora: _Measured, head: _Measured, full: _Measured) -> str:
    share = lora.params / full.params
    ratio = lora.epoch_seconds / full.epoch_seconds if full.epoch_seconds > 0 else 1.0
    pace = f"{1 - ratio:.0%} faster" if ratio < 1 else f"{ratio - 1:.0%} slower"
    return (
        f"LoRA trains {lora.params:,} params: {share:.1%} of full fine-tuning's "
        f"{full.params:,} and {lora.params / head.params:.1f}x the head's {head.params:,}. "
        f"An epoch took {_milliseconds(lora.epoch_seconds)}, {pace} than full fine-tuning "
        f"({_milliseconds(full.epoch_seconds)}; head only {_milliseconds(head.epoch_seconds)}); "
        f"accuracy after {EPOCHS} epochs {lora.accuracy:.1%} (head only {head.accuracy:.1%}, "
        f"full {full.accuracy:.1%})."
    )


def _other_verdict(measured: _Measured, lora: _Measured) -> str:
    return (
        f"Trains {measured.params:,} params ({lora.params:,} with LoRA); an epoch took "
        f"{_milliseconds(measured.epoch_seconds)} ({_milliseconds(lora.epoch_seconds)} with "
        f"LoRA); accuracy after {EPOCHS} epochs {measured.accuracy:.1%} ({lora.accuracy:.1%} "
        f"with LoRA); the base still recognises {measured.remembered:.1%} of digits 0-4."
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 11: LoRA, head only and full fine-tuning, same weights, data and epochs.

    Args:
        seed: Seed of the head's weights, the adapters, the data split and the batch order.

    Returns:
        `(lora, head_only, full)`. LoRA's status is "surprise" when it trains at least
        `SMALL_SAVING_SHARE` of full fine-tuning's parameters (it saves little), "note"
        otherwise; head only is "fine" when its frozen base stayed bitwise unchanged.

    Example:
    >>> lora, head_only, full = run(seed=0)
    >>> round(lora.numbers["Share of full fine-tuning"], 3)
    0.159
    """
    lora, head, full = (_train(seed, way) for way in WAYS)
    share = lora.params / full.params
    head_kept = head.result.verification.all_unchanged
    return (
        dataclasses.replace(
            lora.result,
            status=SURPRISE if share >= SMALL_SAVING_SHARE else NOTE,
            verdict=_lora_verdict(lora, head, full),
            measurements=_measurements(lora, full),
        ),
        dataclasses.replace(
            head.result,
            status=FINE if head_kept else NOTE,
            verdict=_other_verdict(head, lora),
            measurements=_measurements(head, full),
        ),
        dataclasses.replace(
            full.result,
            status=NOTE,
            verdict=_other_verdict(full, lora),
            measurements=_measurements(full, full),
        ),
    )
