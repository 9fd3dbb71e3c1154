"""Hold the pitfall lab's plain results: a pitfall's texts, its key numbers and what each run did.

These value objects cross from `models.pitfalls` to the page (`components.pitfall_lab`); they
carry numbers, text and pandas frames, never a Keras model.

Example:
>>> result = run_pitfall("stale_compile", seed=0)
>>> result.wrong.status, result.right.status
('problem', 'fine')
>>> result.right.numbers["Largest change in a frozen layer"]
0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from models.drift import VerificationResult
from models.keras_version import KerasEnvironment

PROBLEM = "problem"
FINE = "fine"
SURPRISE = "surprise"
NOTE = "note"
STATUSES = (PROBLEM, FINE, SURPRISE, NOTE)


@dataclass(frozen=True)
class Pitfall:
    """One entry of the pitfall lab: what goes wrong, in plain words.

    Attributes:
        key: Stable id, e.g. "stale_compile".
        number: Its place in the lab, from 1.
        title: A short title.
        explanation: What the mistake is and what Keras really does (plain language).
        what_to_look_at: Which numbers and chart show it.
        fix: The right way, in one sentence.
        version_note: Key of `models.keras_version.VERSION_NOTES` when the outcome is known
            to differ between Keras versions ("" when it is not).
    """

    key: str
    number: int
    title: str
    explanation: str
    what_to_look_at: str
    fix: str
    version_note: str = ""


@dataclass(frozen=True)
class Measurement:
    """One key number of a variant, ready to show.

    Attributes:
        label: What it is, e.g. "Validation accuracy".
        value: The number.
        text: The number formatted for display.
        help: One sentence saying how to read it.
    """

    label: str
    value: float
    text: str
    help: str = ""


@dataclass(frozen=True, eq=False)
class VariantResult:
    """What one way of doing it (wrong or right) did, measured.

    Attributes:
        label: e.g. "Wrong: no recompile" or "Right: recompiled".
        description: What this run did, in one sentence.
        status: "problem" (misbehaved), "fine" (behaved), "surprise" (not what the flag
            suggests) or "note" (behaves, worth knowing).
        verdict: One line computed from the measurement.
        history: Keras's per-epoch history of the measured fit(s), lists concatenated.
        drift: The drift frame of `DriftRecorder.frame()`.
        verification: The bitwise check of the layers frozen throughout.
        measurements: Key numbers, in display order.
        chart_kind: "weights", "state" or "effective_kernel" (a LoRA layer's
            `kernel + scale * a @ b`): the drift kind that shows the effect.
        layer_order: Layer paths in model order (for the charts).
        seconds: Wall-clock time of this variant.
        keras_messages: What Keras itself said during the run (warnings, a refusal), verbatim.
    """

    label: str
    description: str
    status: str
    verdict: str
    history: Mapping[str, list[float]]
    drift: pd.DataFrame
    verification: VerificationResult
    measurements: tuple[Measurement, ...]
    chart_kind: str
    layer_order: tuple[str, ...]
    seconds: float
    keras_messages: tuple[str, ...] = ()

    @property
    def numbers(self) -> dict[str, float]:
        """The measurements as `{label: value}`."""
        return {measurement.label: measurement.value for measurement in self.measurements}


@dataclass(frozen=True, eq=False)
class PitfallResult:
    """Both ways of one pitfall (and any extra run), from identical starting weights.

    Attributes:
        key: The pitfall's key in `PITFALLS`.
        title: The pitfall's title.
        seed: The seed both variants used.
        variants: The wrong way first, the right way second, then any extra runs.
        seconds: Wall-clock time of the whole experiment.
        environment: The Keras version and backend it was measured on.
    """

    key: str
    title: str
    seed: int
    variants: tuple[VariantResult, ...]
    seconds: float = field(default=0.0)
    environment: KerasEnvironment | None = None

    @property
    def wrong(self) -> VariantResult:
        """The wrong way (or the surprising case)."""
        return self.variants[0]

    @property
    def right(self) -> VariantResult:
        """The right way (or the reference case)."""
        return self.variants[1]

    @property
    def extra(self) -> tuple[VariantResult, ...]:
        """Further runs beyond the two side by side (e.g. the `training=False` call)."""
        return self.variants[2:]
