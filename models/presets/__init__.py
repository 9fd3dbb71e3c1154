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
| epochs  | epochs                                | 1 to 1000                                     |
| lr      | learning rate                         | a number from 1e-06 to 10                     |
| batch   | batch size                            | 1 to 65536                                    |
| opt     | optimizer                             | "adam", "adamw", "rmsprop", "sgd"             |
| val     | validation fraction                   | 0 to 0.9                                      |
| hide    | controls to hide                      | comma-separated: model, data, upload, freeze, |
|         |                                       | settings, code                                |
| title   | heading for the room                  | text, at most 120 characters                  |
| msg     | message for the room                  | text, at most 500 characters                  |

The ranges are `models.limits`'s, the same `TrainingConfig` accepts, so a link can carry the
settings of any run. The parameter "session" (the run store's session id, `models.run_store`)
is reserved and ignored here.

One owner for each part:

- `preset`: the `Preset` value object and the vocabulary (`PARAMETERS`, `HIDEABLE_CONTROLS`,
  the text and path limits).
- `parsing`: reading a link, `parse_query`, and `resolve_frozen_paths`, which turns its
  explicit plan into the frozen paths of the model in use.
- `building`: writing a link, `preset_for` (the current screen), `preset_query`,
  `preset_link` and `plan_steps`.

Example:
>>> from models.presets import Preset, parse_query, preset_link
"""

from models.presets.building import plan_steps, preset_for, preset_link, preset_query
from models.presets.parsing import parse_query, resolve_frozen_paths
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
]
