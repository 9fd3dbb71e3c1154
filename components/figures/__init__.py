"""Build the plotly figures and tables of FreezeLab's drift and training views from plain data.

Every builder takes plain pandas/Python data (the drift frame of `DriftRecorder.frame()`, the
history dicts of `TrainingProgress`) and returns a `plotly.graph_objects.Figure` (or a
DataFrame); nothing here calls Streamlit, so the same figures work in a notebook.

A layer counts as *frozen* here when it was effectively frozen at every recorded step (the
`frozen` column is True on all its rows): such a layer should stay exactly at zero drift, and it
is drawn in grey. A layer that trained in any recorded fit is drawn in colour.

Modules:
- `layout`: colours, fonts, the title layout and the empty figure every figure shares.
- `drift_frame`: the drift frame's kinds, columns and input checks, and `final_drift_table`.
- `drift`: drift lines, BatchNorm state lines, the heatmap and the final bars.
- `training`: the training curves.
- `comparison`: several runs' curves and final drift compared.
- `rates`: per-layer learning rates and the graded motion they produce.
- `diagnostics`: update-to-weight ratios and gradient norms over training.

Example:
>>> from components.figures import drift_lines_figure, training_curves_figure
>>> figure = drift_lines_figure(recorder.frame(), layer_order=tree.paths())
"""

from components.figures.comparison import (
    COMPARISON_PALETTE,
    comparison_curves_figure,
    comparison_drift_figure,
)
from components.figures.diagnostics import (
    advisor_ranking_figure,
    representation_figure,
    step_statistics_figure,
)
from components.figures.drift import (
    drift_heatmap_figure,
    drift_lines_figure,
    final_drift_bar_figure,
    state_drift_figure,
)
from components.figures.drift_frame import (
    KINDS,
    LORA_TABLE_COLUMNS,
    REQUIRED_DRIFT_COLUMNS,
    STATE_KIND,
    TABLE_COLUMNS,
    WEIGHTS_KIND,
    final_drift_table,
    lora_drift_table,
)
from components.figures.layout import (
    FROZEN_COLOR,
    FROZEN_DASH,
    FROZEN_MARK,
    GAP_COLOR,
    TRAINABLE_COLOR,
    TRAINABLE_PALETTE,
    VALIDATION_COLOR,
)
from components.figures.rates import graded_motion_figure, layer_rates_figure
from components.figures.training import training_curves_figure

__all__ = [
    "COMPARISON_PALETTE",
    "FROZEN_COLOR",
    "FROZEN_DASH",
    "FROZEN_MARK",
    "GAP_COLOR",
    "KINDS",
    "LORA_TABLE_COLUMNS",
    "REQUIRED_DRIFT_COLUMNS",
    "STATE_KIND",
    "TABLE_COLUMNS",
    "TRAINABLE_COLOR",
    "TRAINABLE_PALETTE",
    "VALIDATION_COLOR",
    "WEIGHTS_KIND",
    "advisor_ranking_figure",
    "comparison_curves_figure",
    "comparison_drift_figure",
    "drift_heatmap_figure",
    "drift_lines_figure",
    "final_drift_bar_figure",
    "final_drift_table",
    "graded_motion_figure",
    "layer_rates_figure",
    "lora_drift_table",
    "representation_figure",
    "state_drift_figure",
    "step_statistics_figure",
    "training_curves_figure",
]
