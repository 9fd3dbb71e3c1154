"""FreezeLab's core: pure Keras / NumPy / pandas, usable from a notebook without the dashboard.

Example:
>>> from models import LayerTree, TrainingConfig, TrainingJob, build_default_transfer_model
>>> from models import load_bundled_dataset
>>> model = build_default_transfer_model()
>>> tree = LayerTree(model)
>>> tree.set_frozen("transfer_model/feature_extractor", True)
>>> data = load_bundled_dataset("digits_5_9")
>>> job = TrainingJob(model, data.x, data.y, config=TrainingConfig(epochs=2), tree=tree)
>>> job.run().state
<JobState.FINISHED: 'finished'>
>>> job.verification().message()
'All 6 frozen layers are bitwise unchanged.'
"""

from models.bundled import (
    build_default_transfer_model,
    load_bundled_base,
    load_bundled_metadata,
    load_bundled_model,
)
from models.datasets import (
    BUNDLED_DATASETS,
    DEFAULT_DATASET,
    ImageDataset,
    generate_shapes,
    load_bundled_dataset,
    load_digits_task,
)
from models.drift import DriftRecorder, VerificationResult, verify_frozen_unchanged
from models.job import JobState, TrainingProgress
from models.prefix_cache import ExecutionPlan, plan_prefix_cache
from models.schedule import Phase, ScheduledJob, gradual_schedule, two_phase_schedule
from models.slots import TrainingSlots
from models.splits import train_validation_split
from models.training import TrainingJob
from models.training_config import TrainingConfig
from models.transfer import build_transfer_model, cut_base
from models.tree import LayerNode, LayerTree, ParameterCounts, set_trainable

__all__ = [
    "BUNDLED_DATASETS",
    "DEFAULT_DATASET",
    "DriftRecorder",
    "ExecutionPlan",
    "ImageDataset",
    "JobState",
    "LayerNode",
    "LayerTree",
    "ParameterCounts",
    "Phase",
    "ScheduledJob",
    "TrainingConfig",
    "TrainingJob",
    "TrainingProgress",
    "TrainingSlots",
    "VerificationResult",
    "build_default_transfer_model",
    "build_transfer_model",
    "cut_base",
    "generate_shapes",
    "gradual_schedule",
    "load_bundled_base",
    "load_bundled_dataset",
    "load_bundled_metadata",
    "load_bundled_model",
    "load_digits_task",
    "plan_prefix_cache",
    "set_trainable",
    "train_validation_split",
    "two_phase_schedule",
    "verify_frozen_unchanged",
]
