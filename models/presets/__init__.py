"""Instructor links: URL query parameters that preset the model, data, freeze plan and settings.

A preset link lets a whole room start from the same screen, e.g.

    ?model=mobilenet_v2_035&size=96&weights=random&data=digits_5_9&freeze=base
    &epochs=3&lr=0.001&batch=16&opt=adam&val=0.2&hide=model,data&title=Lab%201

Every parameter is optional; one that is missing keeps the app's default. An invalid one is
ignored with a notice naming it, its value and what is accepted; the rest still apply.

| name    | meaning                               | accepted values                               |
|---------|---------------------------------------|-----------------------------------------------|
| model   | base model                            | "bundled_digits_cnn" or a keras.applications  |
|         |                                       | key such as "mobilenet_v2_035", "resnet50"    |
| size    | input height = width (applications)   | the model's minimum (32 or 71) to 512         |
| weights | applications weights                  | "imagenet" or "random"                        |
| data    | bundled dataset                       | "digits_5_9", "digits_0_4", "shapes"          |
| freeze  | named freeze plan                     | "none", "base", "all", "batch_norm",          |
|         |                                       | "up_to:<layer path>", "top:<n>" (n base       |
|         |                                       | layers left trainable); see `models.plans`    |
| frozen  | explicit plan, as top-down steps      | comma-separated layer paths, applied in       |
|         |                                       | order from an all-trainable model: "path"     |
|         |                                       | freezes the layer and all inside it, "!path"  |
|         |                                       | makes them trainable again; replaces `freeze` |
| lora    | LoRA adapters (Keras's enable_lora)   | comma-separated "<target>:<rank>[:<alpha>]",  |
|         |                                       | applied in order; a target is a layer path or |
|         |                                       | a recipe run on the base: "dense" (every      |
|         |                                       | Dense/EinsumDense), "attention" (query and    |
|         |                                       | value projections); rank 1 to 512, alpha      |
|         |                                       | 0.01 to 4096 (default: the rank)              |
| epochs  | epochs                                | 1 to 1000                                     |
| lr      | learning rate                         | a number from 1e-06 to 10                     |
| batch   | batch size                            | 1 to 65536                                    |
| opt     | optimizer                             | "adam", "adamw", "rmsprop", "sgd"             |
| val     | validation fraction                   | 0 to 0.9                                      |
| rates   | learning-rate multipliers by layer    | comma-separated "<layer path>:<multiplier>",  |
|         | (a layer inherits its parent's)       | multiplier 0 (stops it) to 100 (1: base rate) |
| decay   | layer-wise decay factor               | 0 to 1: each base block below the top one     |
|         |                                       | learns this factor times the block above      |
| decay_block | base layers per decay block       | 1 to 10000 (default 1)                        |
| decay_base  | the base the decay runs over      | a layer path (default: the model's base)      |
| hide    | controls to hide                      | comma-separated: model, data, upload, freeze, |
|         |                                       | settings, code                                |
| title   | heading for the room                  | text, at most 120 characters                  |
| msg     | message for the room                  | text, at most 500 characters                  |

The ranges are `models.limits`'s, the same `TrainingConfig`, `LoraSetting` and `LayerRates`
accept, so a link can carry the settings of any run; a link's rates must also keep the
largest layer rate (`lr` times the largest multiplier) within the learning-rate range. The
recipes are `models.lora.LORA_TARGETS`. The parameter "session" (the run store's session id,
`models.run_store`) is reserved and ignored here.

E.g. `?lora=attention:4&decay=0.5&decay_block=2` puts rank-4 adapters on the attention
projections of the base and halves the learning rate from each pair of base layers to the
next one down; `?lora=transfer_model/feature_extractor/conv3:8:16&rates=transfer_model/
feature_extractor:0.1` (one line) adapts one convolution and trains the base at a tenth of
the rate.

One owner for each part:

- `preset`: the `Preset` value object and the vocabulary (`PARAMETERS`, `HIDEABLE_CONTROLS`,
  the text and path limits).
- `parsing`: reading a link, `parse_query`, and `resolve_frozen_paths`, `resolve_lora` and
  `resolve_layer_rates`, which turn its explicit plan, LoRA adapters and per-layer rates into
  those of the model in use.
- `building`: writing a link, `preset_for` (the current screen: plan, LoRA adapters and
  settings), `preset_query`, `preset_link` and `plan_steps`.

Example:
>>> from models.presets import Preset, parse_query, preset_link
"""

from models.presets.building import plan_steps, preset_for, preset_link, preset_query
from models.presets.parsing import (
    parse_query,
    resolve_frozen_paths,
    resolve_layer_rates,
    resolve_lora,
)
from models.presets.preset import (
    HIDEABLE_CONTROLS,
    MAX_MESSAGE_LENGTH,
    MAX_PATH_LENGTH,
    MAX_PATHS,
    MAX_TITLE_LENGTH,
    PARAMETERS,
    RESERVED_PARAMETERS,
    Preset,
)
from models.template import BUNDLED_MODEL_KEY  # the `model` value of the bundled model

__all__ = [
    "BUNDLED_MODEL_KEY",
    "HIDEABLE_CONTROLS",
    "MAX_MESSAGE_LENGTH",
    "MAX_PATHS",
    "MAX_PATH_LENGTH",
    "MAX_TITLE_LENGTH",
    "PARAMETERS",
    "RESERVED_PARAMETERS",
    "Preset",
    "parse_query",
    "plan_steps",
    "preset_for",
    "preset_link",
    "preset_query",
    "resolve_frozen_paths",
    "resolve_layer_rates",
    "resolve_lora",
]
