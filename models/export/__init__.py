"""Export a FreezeLab setup: runnable Keras code, run config JSON, model and drift downloads.

One module for each thing that leaves FreezeLab, all plain data the dashboard offers for
download:

- `script`: `generate_code`, a standalone Keras script that rebuilds the same model, applies
  the same freeze plan and LoRA adapters and trains with the same settings, per-layer learning
  rates included. Its parts: `base_code` rebuilds the base, `plan_code` holds the freeze
  plan's counts and statements (`plan_counts`, `freeze_statements`, `restrict_plan`),
  `lora_code` the `enable_lora` statements, `rates_code` the layer-rate optimizer and its
  multipliers, and `source` the Python text helpers.
- `config_json`: `run_config` / `run_config_bytes` describe a run as JSON (LoRA adapters
  included), `parse_run_config` reads one back strictly, and `plan_from_config`,
  `lora_from_config` and `training_from_config` fit its plan, adapters and settings to the
  current model.
- `files`: `model_file_bytes` and `drift_csv_bytes` (the trained model and the drift records),
  `base_model_file` (the pretrained base's file the script loads) and `download_file_name`.

Example:
>>> from models.export import generate_code, run_config, model_file_bytes
"""

from models.export.config_json import (
    FREEZELAB_VERSION,
    RunConfig,
    lora_from_config,
    parse_run_config,
    plan_from_config,
    run_config,
    run_config_bytes,
    training_from_config,
)
from models.export.files import (
    BASE_MODEL_BUTTON,
    base_model_file,
    download_file_name,
    drift_csv_bytes,
    model_file_bytes,
)
from models.export.plan_code import freeze_statements, plan_counts, restrict_plan
from models.export.script import generate_code

__all__ = [
    "BASE_MODEL_BUTTON",
    "FREEZELAB_VERSION",
    "RunConfig",
    "base_model_file",
    "download_file_name",
    "drift_csv_bytes",
    "freeze_statements",
    "generate_code",
    "lora_from_config",
    "model_file_bytes",
    "parse_run_config",
    "plan_counts",
    "plan_from_config",
    "restrict_plan",
    "run_config",
    "run_config_bytes",
    "training_from_config",
]
