"""The lab tells the truth of the installed Keras: each version-dependent verdict is compared with
a direct Keras measurement made in the same process, on TensorFlow and on JAX.

Nothing here expects a fixed outcome for behaviour that changes between Keras releases
(`models.keras_version.VERSION_NOTES`): a new Keras fails these tests only where FreezeLab
reports something other than what Keras does.
"""

import importlib.util

import keras
import pytest

from models.keras_version import VERSION_NOTES, KerasEnvironment, installed_keras, version_tuple
from tests.backend_subprocess import run_on_backend

pytestmark = pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")

MEASURE = r"""
import json
import warnings

import keras
import numpy as np

from models.keras_version import installed_keras
from models.pitfalls import run_pitfall

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8)).astype("float32")
y = rng.integers(0, 2, 64)


def direct_stale_compile():
    # Train, freeze the first layer, train again WITHOUT compile(): what does this Keras do?
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(4, name="first")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.get_layer("first").trainable = False
    kernel = np.array(model.get_layer("first").kernel.numpy(), copy=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.fit(x, y, epochs=1, verbose=0)
        except ValueError:
            return {"outcome": "refused", "warned": False}
    warned = any(
        "trainable" in str(w.message) and issubclass(w.category, UserWarning) for w in caught
    )
    moved = not np.array_equal(kernel, model.get_layer("first").kernel.numpy())
    return {"outcome": "moved" if moved else "kept", "warned": warned}


class ZeroedShare(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.share = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs):
        self.share.assign(keras.ops.mean(keras.ops.cast(keras.ops.equal(inputs, 0), "float32")))
        return inputs


def direct_training_false():
    # base(x, training=False) with a trainable BatchNorm inside, and a head Dropout(0.5).
    keras.utils.set_random_seed(0)
    base_inputs = keras.Input((8,))
    base = keras.Model(
        base_inputs, keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(8)(base_inputs))
    )
    inputs = keras.Input((8,))
    features = keras.ops.abs(base(inputs, training=False)) + 1.0  # no zero before the Dropout
    dropped = ZeroedShare(name="probe")(keras.layers.Dropout(0.5)(features))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(dropped))
    model.compile("sgd", "sparse_categorical_crossentropy")
    mean = np.array(base.get_layer("bn").moving_mean.numpy(), copy=True)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # one batch: the probe reads it
    return {
        "batch_norm_moved": not np.array_equal(mean, base.get_layer("bn").moving_mean.numpy()),
        "dropout_zeroed": float(np.asarray(model.get_layer("probe").share.numpy())),
    }


def lab(key):
    result = run_pitfall(key, seed=0)
    return {
        "environment": result.environment.label,
        "variants": [
            {
                "label": v.label, "status": v.status, "verdict": v.verdict,
                "numbers": v.numbers, "messages": list(v.keras_messages),
                "all_unchanged": bool(v.verification.all_unchanged),
            }
            for v in result.variants
        ],
    }


def lessons():
    from models import lessons as lesson

    frozen = lesson.train_with_frozen_layer(seed=0, epochs=2)
    flags = lesson.flag_versus_training(seed=0)
    nested = lesson.nested_freeze(outer_trainable=True, inner_child_trainable=True,
                                  inner_trainable=False)
    return {
        "dense": lesson.dense_weights().num_trainable_weights,
        "batch_norm": [lesson.batch_norm_weights().num_trainable_weights,
                       lesson.batch_norm_weights().num_non_trainable_weights],
        "frozen_dense": lesson.frozen_dense().num_non_trainable_weights,
        "frozen_layer_moved": [not change.bitwise_equal for change in frozen.layers
                               if not change.trainable],
        "flag_badges_match": flags.badge_matches_keras,
        "flag_child_moved": flags.layer("outer/inner/dense_a").moved,
        "nested_child_trains": nested.node("outer/inner/dense_a").effectively_trainable,
        "nested_keras_trains_child": any(
            path.startswith("inner/dense_a/") for path in nested.keras_trainable_weights
        ),
    }


print("RESULT " + json.dumps({
    "lessons": lessons(),
    "environment": installed_keras().label,
    "stale_compile": direct_stale_compile(),
    "training_false": direct_training_false(),
    "lab": {key: lab(key) for key in ("stale_compile", "batch_norm", "training_false")},
}))
"""


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def measured(request) -> dict:
    """The direct measurements and the lab's reports, in a fresh process of one backend."""
    backend = request.param
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    return run_on_backend(MEASURE, backend, timeout=900)


def test_every_report_names_the_keras_and_backend_it_ran_on(measured):
    for report in measured["lab"].values():
        assert report["environment"] == measured["environment"]
    assert measured["environment"].startswith(f"Keras {keras.__version__} · ")


def test_the_stale_compile_verdict_is_what_this_keras_does(measured):
    direct = measured["stale_compile"]
    wrong, right = measured["lab"]["stale_compile"]["variants"][:2]
    assert right["status"] == "fine" and right["all_unchanged"]
    if direct["outcome"] == "moved":
        assert wrong["status"] == "problem" and not wrong["all_unchanged"]
        assert "moved" in wrong["verdict"]
    elif direct["outcome"] == "refused":
        assert wrong["status"] == "note" and "refused" in wrong["verdict"]
        assert any("Error" in message for message in wrong["messages"])
        assert wrong["all_unchanged"]  # nothing trained
    else:
        assert wrong["status"] == "fine" and wrong["all_unchanged"]
    if direct["warned"]:
        assert any("trainable" in message for message in wrong["messages"])
    elif direct["outcome"] != "refused":
        assert "Keras gave no warning" in wrong["verdict"]


def test_the_training_false_verdicts_are_what_this_keras_does(measured):
    direct = measured["training_false"]
    _, batch_norm_right, folklore = measured["lab"]["batch_norm"]["variants"]
    assert batch_norm_right["status"] == "fine"
    # Pitfall 2's third run: BN trainable inside base(x, training=False).
    assert (folklore["status"] == "problem") == direct["batch_norm_moved"]
    assert (folklore["numbers"]["Moving mean change"] > 0) == direct["batch_norm_moved"]
    # Pitfall 8: the same for the base's BN, plus the head Dropout during fit.
    wrong, right = measured["lab"]["training_false"]["variants"]
    assert (wrong["numbers"]["BN layers whose statistics moved"] > 0) == direct["batch_norm_moved"]
    dropout_works = direct["dropout_zeroed"] > 0.25
    assert (wrong["numbers"]["Head Dropout zeroed"] > 0.25) == dropout_works
    assert wrong["status"] == (
        "problem" if direct["batch_norm_moved"] or not dropout_works else "fine"
    )
    # The right way holds on every version: BN kept bitwise, the Dropout drops about half.
    assert right["status"] == "fine" and right["numbers"]["Moving mean change"] == 0
    assert 0.4 < right["numbers"]["Head Dropout zeroed"] < 0.6 and right["all_unchanged"]


def test_environment_and_version_notes():
    environment = installed_keras()
    assert environment.keras_version == keras.__version__
    assert environment.backend == keras.backend.backend()
    assert KerasEnvironment("3.16.0", "jax", "0.10.2").label == "Keras 3.16.0 · JAX 0.10.2"
    assert version_tuple("3.16.0.dev2026081") == (3, 16, 0) and version_tuple("3") == (3, 0, 0)
    with pytest.raises(ValueError, match="received 'next'"):
        version_tuple("next")
    for note in VERSION_NOTES.values():
        assert note.text and note.url.startswith("https://github.com/keras-team/keras/")


def test_the_lessons_run_and_agree_with_keras_on_this_backend(measured):
    lessons = measured["lessons"]
    assert lessons["dense"] == 2 and lessons["batch_norm"] == [2, 2]
    assert lessons["frozen_dense"] == 2
    assert lessons["frozen_layer_moved"] == [False]  # the frozen layer stayed bitwise
    assert lessons["flag_badges_match"]  # the tree's badges equal what Keras trained
    # The tree's "really trains" equals Keras's own trainable_weights, measured here.
    assert lessons["nested_child_trains"] == lessons["nested_keras_trains_child"]


def test_the_training_false_pitfall_is_the_eighth_and_names_its_version_note():
    from models.pitfalls import PITFALLS

    assert list(PITFALLS)[7] == "training_false" and PITFALLS["training_false"].number == 8
    for key in ("training_false", "batch_norm", "stale_compile"):
        assert PITFALLS[key].version_note in VERSION_NOTES
