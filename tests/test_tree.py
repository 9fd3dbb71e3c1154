"""Tests for models.tree: the layer tree, Keras-exact freezing and parameter counts."""

import math
import random

import keras
import numpy as np
import pytest

from models.tree import LayerTree, ParameterCounts


def keras_counts(model: keras.Model) -> ParameterCounts:
    """The independent reference: Keras's own trainable / non-trainable weight lists."""
    return ParameterCounts(
        trainable=sum(math.prod(w.shape) for w in model.trainable_weights),
        non_trainable=sum(math.prod(w.shape) for w in model.non_trainable_weights),
    )


def small_nested_model() -> keras.Sequential:
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="a"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, name="b"),
        ],
        name="inner",
    )
    return keras.Sequential(
        [keras.Input((4,)), inner, keras.layers.Dense(2, name="c")], name="outer"
    )


# ------------------------------------------------------------------- the seed's facts, via the tree
def test_dense_has_two_trainable_weights():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense")], name="m")
    node = LayerTree(model).node("m/dense")
    layer = model.get_layer("dense")
    assert len(layer.weights) == 2
    assert len(layer.trainable_weights) == 2 and len(layer.non_trainable_weights) == 0
    assert node.own_trainable_params == 3 * 4 + 4
    assert node.own_non_trainable_params == 0


def test_batch_norm_has_two_trainable_and_two_non_trainable_weights():
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.BatchNormalization(name="bn")], name="m"
    )
    node = LayerTree(model).node("m/bn")
    layer = model.get_layer("bn")
    assert (len(layer.weights), len(layer.trainable_weights), len(layer.non_trainable_weights)) == (
        4,
        2,
        2,
    )
    assert node.is_batch_norm
    assert node.own_trainable_params == 10  # gamma, beta
    assert node.own_non_trainable_params == 10  # moving mean, moving variance
    assert node.own_state_params == 10


def test_frozen_dense_has_zero_trainable_and_two_non_trainable_weights():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense")], name="m")
    tree = LayerTree(model)
    tree.set_frozen("m/dense", True)
    layer = model.get_layer("dense")
    assert len(layer.trainable_weights) == 0 and len(layer.non_trainable_weights) == 2
    node = tree.node("m/dense")
    assert not node.trainable and not node.effectively_trainable
    assert (node.own_trainable_params, node.own_non_trainable_params) == (0, 16)
    assert tree.totals() == keras_counts(model) == ParameterCounts(0, 16)


def test_freezing_outer_model_freezes_inner_model_and_its_layers():
    model = small_nested_model()
    tree = LayerTree(model)
    tree.set_frozen("outer", True)
    inner = model.get_layer("inner")
    assert inner.trainable is False
    assert all(layer.trainable is False for layer in inner.layers)
    assert all(not node.trainable for node in tree.nodes())
    assert tree.totals() == keras_counts(model)
    assert tree.totals().trainable == 0


def test_tree_structure_nested_paths_and_order():
    tree = LayerTree(small_nested_model())
    paths = tree.paths()
    assert paths[0] == "outer"
    assert "outer/inner/a" in paths and "outer/inner/bn" in paths and "outer/c" in paths
    assert paths.index("outer/inner") < paths.index("outer/inner/a") < paths.index("outer/c")
    inner = tree.node("outer/inner")
    assert inner.is_model and inner.depth == 1 and inner.parent_path == "outer"
    assert inner.children == ("outer/inner/a", "outer/inner/bn", "outer/inner/b")
    # Subtree totals of a node add up its descendants.
    assert inner.total_params == sum(math.prod(w.shape) for w in tree.layer("outer/inner").weights)


def test_unknown_path_names_what_was_received():
    tree = LayerTree(small_nested_model())
    with pytest.raises(ValueError, match="No layer at path 'outer/nope'"):
        tree.set_frozen("outer/nope", True)


def test_unbuilt_model_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="not built"):
        LayerTree(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="expects a Keras model"):
        LayerTree("model.keras")


# ------------------------------------------------------ child unfrozen under a frozen parent
def test_child_unfrozen_under_frozen_nested_parent_matches_keras_and_really_trains():
    """Measured Keras 3 behaviour: only the top model's flag gates `trainable_weights`.

    The nested parent's own `trainable_weights` is [], but the outer model still lists the
    child's weights, and `fit` on the outer model updates them.
    """
    model = small_nested_model()
    tree = LayerTree(model)
    tree.set_frozen("outer/inner", True)
    tree.set_frozen("outer/inner/a", False)
    node = tree.node("outer/inner/a")
    assert node.trainable and node.ancestor_frozen and node.effectively_trainable
    assert model.get_layer("inner").trainable_weights == []
    assert tree.totals() == keras_counts(model)
    assert not tree.node("outer/inner/b").effectively_trainable

    model.compile(optimizer="adam", loss="mse")
    before = [w.numpy().copy() for w in model.get_layer("inner").get_layer("a").weights]
    frozen_before = [w.numpy().copy() for w in model.get_layer("inner").get_layer("b").weights]
    model.fit(np.random.rand(16, 4), np.random.rand(16, 2), epochs=1, verbose=0)
    after = [w.numpy() for w in model.get_layer("inner").get_layer("a").weights]
    frozen_after = [w.numpy() for w in model.get_layer("inner").get_layer("b").weights]
    assert any(not np.array_equal(x, y) for x, y in zip(before, after, strict=True))
    for x, y in zip(frozen_before, frozen_after, strict=True):
        np.testing.assert_array_equal(x, y)


def test_child_unfrozen_under_frozen_top_model_does_not_train():
    model = small_nested_model()
    tree = LayerTree(model)
    tree.freeze_all()
    tree.set_frozen("outer/c", False)
    node = tree.node("outer/c")
    assert node.trainable and node.ancestor_frozen and not node.effectively_trainable
    assert tree.totals() == keras_counts(model)
    assert tree.totals().trainable == 0


# ------------------------------------------------------------------------ plans and bulk actions
def test_plan_round_trip_restores_every_flag():
    model = small_nested_model()
    tree = LayerTree(model)
    tree.set_frozen("outer/inner", True)
    tree.set_frozen("outer/inner/bn", False)
    plan = tree.frozen_paths()
    flags = {path: tree.layer(path).trainable for path in tree.paths()}
    tree.unfreeze_all()
    tree.apply_frozen_paths(plan)
    assert {path: tree.layer(path).trainable for path in tree.paths()} == flags
    assert tree.frozen_paths() == plan
    assert tree.totals() == keras_counts(model)


def test_apply_plan_rejects_unknown_paths_and_bare_strings():
    tree = LayerTree(small_nested_model())
    with pytest.raises(ValueError, match="not in model 'outer'"):
        tree.apply_frozen_paths({"outer/missing"})
    with pytest.raises(TypeError, match="single string"):
        tree.apply_frozen_paths("outer/c")


def test_freeze_up_to_freezes_everything_before_and_including_the_layer():
    model = small_nested_model()
    tree = LayerTree(model)
    tree.freeze_up_to("outer/inner/bn")
    assert not tree.node("outer/inner/a").effectively_trainable
    assert not tree.node("outer/inner/bn").effectively_trainable
    assert tree.node("outer/inner/b").effectively_trainable
    assert tree.node("outer/c").effectively_trainable
    assert tree.totals() == keras_counts(model)
    # Freezing up to a nested model freezes all of it and nothing after it.
    tree.freeze_up_to("outer/inner")
    assert all(not tree.node(p).effectively_trainable for p in tree.descendants("outer/inner"))
    assert tree.node("outer/c").effectively_trainable


def test_unfreeze_top_follows_the_keras_fine_tuning_recipe():
    model = small_nested_model()
    tree = LayerTree(model)
    tree.freeze_all()
    assert tree.default_base_path() == "outer/inner"
    tree.unfreeze_top(1, "outer/inner")
    assert [tree.node(p).trainable for p in tree.base_layer_paths("outer/inner")] == [
        False,
        False,
        True,
    ]
    # The base's own flag is True (as in `base.trainable = True`); the top model stays frozen.
    assert model.get_layer("inner").trainable
    tree.unfreeze_all()
    tree.unfreeze_top(2)
    assert [tree.node(p).effectively_trainable for p in tree.base_layer_paths()] == [
        False,
        True,
        True,
    ]
    assert tree.totals() == keras_counts(model)
    with pytest.raises(ValueError, match="whole number >= 0"):
        tree.unfreeze_top(-1)


def test_freeze_batch_norm_freezes_only_batch_norm_layers():
    model = small_nested_model()
    tree = LayerTree(model)
    tree.freeze_batch_norm()
    assert tree.frozen_paths() == frozenset({"outer/inner/bn"})
    assert tree.totals() == keras_counts(model)


# ------------------------------------------------------------------ sublayers, sharing, nesting
@keras.saving.register_keras_serializable(package="freezelab_tests")
class TwoDense(keras.layers.Layer):
    """A layer that owns two Dense sublayers and a weight of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(3, name="first")
        self.second = keras.layers.Dense(2, name="second")

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(1,), initializer="ones", name="scale")
        self.first.build(input_shape)
        self.second.build((None, 3))

    def call(self, inputs):
        return self.second(self.first(inputs)) * self.scale


def test_layers_with_sublayers_are_nodes_with_children():
    inputs = keras.Input((4, 8))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(
        inputs, inputs
    )
    outputs = TwoDense(name="two_dense")(keras.layers.Flatten()(attended))
    model = keras.Model(inputs, outputs, name="m")
    tree = LayerTree(model)
    attention = tree.node("m/attention")
    assert not attention.is_model
    assert {"m/attention/query", "m/attention/key", "m/attention/value"} <= set(attention.children)
    two = tree.node("m/two_dense")
    assert two.children == ("m/two_dense/first", "m/two_dense/second")
    assert two.own_trainable_params == 1
    assert tree.totals() == keras_counts(model)
    tree.set_frozen("m/two_dense", True)
    assert not tree.node("m/two_dense/second").trainable
    assert tree.totals() == keras_counts(model)
    tree.set_frozen("m/attention/key", True)
    assert tree.totals() == keras_counts(model)


def test_shared_layer_appears_once_and_is_marked_shared():
    shared = keras.layers.Dense(4, name="shared")
    left = keras.Input((4,), name="left")
    right = keras.Input((4,), name="right")
    merged = keras.layers.Add(name="add")([shared(left), shared(right)])
    model = keras.Model([left, right], merged, name="m")
    tree = LayerTree(model)
    assert tree.paths().count("m/shared") == 1
    assert tree.node("m/shared").is_shared
    # A layer used in two nested models is listed under the first only.
    branch_one = keras.Sequential([keras.Input((4,)), shared], name="one")
    branch_two = keras.Sequential([keras.Input((4,)), shared], name="two")
    inputs = keras.Input((4,))
    outer = keras.Model(
        inputs, keras.layers.Add()([branch_one(inputs), branch_two(inputs)]), name="o"
    )
    outer_tree = LayerTree(outer)
    assert [p for p in outer_tree.paths() if p.endswith("/shared")] == ["o/one/shared"]
    assert outer_tree.node("o/one/shared").is_shared
    assert outer_tree.totals() == keras_counts(outer)


# ------------------------------------------- counts equal Keras's on keras.applications models
def random_plans(tree: LayerTree, count: int, seed: int):
    generator = random.Random(seed)
    paths = tree.paths()
    for _ in range(count):
        yield {p for p in paths if generator.random() < generator.choice([0.05, 0.3, 0.7])}


@pytest.mark.parametrize(
    ("builder", "expected_layers"),
    [
        (
            lambda: keras.applications.MobileNetV2(
                weights=None, input_shape=(32, 32, 3), classes=4
            ),
            156,
        ),
        (
            lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=4),
            177,
        ),
        (
            lambda: keras.applications.EfficientNetB0(
                weights=None, input_shape=(32, 32, 3), classes=4
            ),
            240,
        ),
    ],
    ids=["MobileNetV2", "ResNet50", "EfficientNetB0"],
)
def test_counts_equal_keras_on_applications_under_random_plans(builder, expected_layers):
    model = builder()
    assert len(model.layers) == expected_layers
    tree = LayerTree(model)
    assert len(tree) == expected_layers + 1  # the model itself is the root node
    assert tree.totals() == keras_counts(model)
    for plan in random_plans(tree, count=4, seed=7):
        tree.apply_frozen_paths(plan)
        assert tree.totals() == keras_counts(model)
        assert tree.frozen_paths() == frozenset(plan)
    tree.freeze_batch_norm()
    assert tree.totals() == keras_counts(model)


def test_counts_equal_keras_with_nested_functional_models_and_random_toggles():
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35
    )
    inputs = keras.Input((32, 32, 3))
    features = base(inputs, training=False)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    head = keras.Sequential(
        [keras.Input((pooled.shape[-1],)), keras.layers.Dense(8), keras.layers.Dense(3)],
        name="head",
    )
    model = keras.Model(inputs, head(pooled), name="transfer")
    wrapped = keras.Sequential([keras.Input((32, 32, 3)), model], name="wrapper")
    tree = LayerTree(wrapped)
    assert tree.node("wrapper/transfer").is_model
    assert tree.node(f"wrapper/transfer/{base.name}").is_model
    assert tree.totals() == keras_counts(wrapped)
    generator = random.Random(3)
    paths = tree.paths()
    for _ in range(25):
        tree.set_frozen(generator.choice(paths), generator.random() < 0.5)
        assert tree.totals() == keras_counts(wrapped)
    # Child unfrozen under a frozen nested parent, in a real architecture.
    tree.set_frozen(f"wrapper/transfer/{base.name}", True)
    tree.unfreeze_all()
    block = tree.base_layer_paths(f"wrapper/transfer/{base.name}")[-3]
    tree.set_frozen(f"wrapper/transfer/{base.name}", True)
    tree.set_frozen(block, False)
    assert tree.totals() == keras_counts(wrapped)
    assert tree.node(block).ancestor_frozen


def test_frame_has_one_row_per_node():
    tree = LayerTree(small_nested_model())
    frame = tree.frame()
    assert list(frame["path"]) == tree.paths()
    assert frame.loc[0, "total_params"] == tree.totals().total


def test_unfreezing_a_trainable_parent_unfreezes_frozen_children():
    """Keras documents that the setter propagates; FreezeLab does so on every backend.

    (On TensorFlow, `parent.trainable = True` is skipped when the flag is already True.)
    """
    model = small_nested_model()
    tree = LayerTree(model)
    tree.set_frozen("outer/inner/a", True)
    tree.set_frozen("outer/inner", False)
    assert all(tree.layer(p).trainable for p in tree.descendants("outer/inner"))
    tree.set_frozen("outer/inner/bn", True)
    tree.unfreeze_all()
    assert tree.frozen_paths() == frozenset()
    assert tree.totals() == keras_counts(model)


def test_a_nested_model_called_once_does_not_mark_its_layers_shared():
    base = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="b")],
        name="base",
    )
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(base(inputs)), name="m")
    assert not any(node.is_shared for node in LayerTree(model).nodes())


# -------------------------------------------- a layer with two parents (issue 13, item 2)
def two_parent_model() -> keras.Model:
    """One Dense layer ("shared", 20 params) inside two nested Sequential models."""
    shared = keras.layers.Dense(4, name="shared")
    one = keras.Sequential([keras.Input((4,)), shared, keras.layers.Dense(5, name="a")], name="one")
    two = keras.Sequential([keras.Input((4,)), shared, keras.layers.Dense(5, name="b")], name="two")
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Concatenate(name="join")([one(inputs), two(inputs)])
    return keras.Model(inputs, outputs, name="outer")


def test_reapplying_a_plan_keeps_a_layer_with_two_parents_frozen():
    model = two_parent_model()
    tree = LayerTree(model)
    tree.set_frozen("outer/one/shared", True)
    plan = tree.frozen_paths()
    assert plan == frozenset({"outer/one/shared"})
    assert tree.totals() == keras_counts(model) == ParameterCounts(50, 20)
    # Same model: the second parent ("two") must not unfreeze the shared layer again.
    tree.apply_frozen_paths(plan)
    assert tree.frozen_paths() == plan
    assert not model.get_layer("one").get_layer("shared").trainable
    assert tree.totals() == keras_counts(model) == ParameterCounts(50, 20)
    # A fresh copy of the architecture gets the same plan.
    fresh = two_parent_model()
    fresh_tree = LayerTree(fresh)
    fresh_tree.apply_frozen_paths(plan)
    assert fresh_tree.frozen_paths() == plan
    assert fresh_tree.totals() == keras_counts(fresh) == ParameterCounts(50, 20)
    # And `fit` really leaves it alone.
    fresh.compile(optimizer="adam", loss="mse")
    shared = fresh.get_layer("two").get_layer("shared")
    before = [w.numpy().copy() for w in shared.weights]
    trained_before = fresh.get_layer("two").get_layer("b").kernel.numpy().copy()
    fresh.fit(np.random.rand(16, 4), np.random.rand(16, 10), epochs=1, verbose=0)
    for old, new in zip(before, shared.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    assert not np.array_equal(trained_before, fresh.get_layer("two").get_layer("b").kernel.numpy())


def test_a_shared_layer_can_be_named_by_any_of_its_paths():
    model = two_parent_model()
    tree = LayerTree(model)
    assert tree.paths().count("outer/one/shared") == 1 and "outer/two/shared" not in tree.paths()
    assert tree.aliases("outer/one/shared") == ["outer/two/shared"]
    assert tree.aliases("outer/two/shared") == ["outer/one/shared"]
    assert tree.layer("outer/two/shared") is tree.layer("outer/one/shared")
    # One Keras object, one flag: a plan naming either path freezes it, reported under one path.
    tree.apply_frozen_paths({"outer/two/shared"})
    assert tree.frozen_paths() == frozenset({"outer/one/shared"})
    assert tree.totals() == keras_counts(model) == ParameterCounts(50, 20)
    tree.set_frozen("outer/two/shared", False)
    assert tree.frozen_paths() == frozenset()
    tree.freeze_up_to("outer/two/shared")  # the same as up to its listed path
    assert tree.frozen_paths() == frozenset({"outer/x", "outer/one/shared"})
    tree.unfreeze_all()
    # Keras semantics: freezing the second parent freezes the shared layer too.
    tree.set_frozen("outer/two", True)
    assert tree.frozen_paths() == frozenset({"outer/two", "outer/two/b", "outer/one/shared"})
    assert tree.totals() == keras_counts(model)


def test_each_parent_counts_the_shared_weights_and_the_totals_count_them_once():
    model = two_parent_model()
    tree = LayerTree(model)
    for node in tree.nodes():
        # Every subtree count equals what Keras's own `layer.weights` holds (deduplicated).
        weights = tree.layer(node.path).weights
        assert node.total_params == sum(math.prod(w.shape) for w in weights), node.path
    one, two = tree.node("outer/one"), tree.node("outer/two")
    assert (one.total_params, two.total_params) == (45, 45)
    assert (one.shared_params, two.shared_params) == (20, 20)
    assert tree.node("outer/one/shared").shared_params == 20
    assert tree.node("outer/one/a").shared_params == 0
    root = tree.node("outer")
    assert root.shared_params == 0 and root.total_params == 70 == keras_counts(model).total
    tree.set_frozen("outer/one/shared", True)
    assert (two.trainable_params, tree.node("outer/two").trainable_params) == (45, 25)


def several_parents_model() -> keras.Model:
    """A Dense, a BatchNormalization and a nested block, each shared by several parents."""
    dense = keras.layers.Dense(4, name="dense")
    norm = keras.layers.BatchNormalization(name="norm")
    block = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, name="inner"), norm], name="block"
    )
    branches = [
        keras.Sequential([keras.Input((4,)), dense, block], name="p1"),
        keras.Sequential(
            [keras.Input((4,)), norm, dense, keras.layers.Dense(4, name="own")], name="p2"
        ),
        keras.Sequential([keras.Input((4,)), block, dense], name="p3"),
    ]
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Add(name="add")([branch(inputs) for branch in branches])
    return keras.Model(inputs, outputs, name="m")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_plans_on_layers_with_several_parents_match_keras(seed):
    model = several_parents_model()
    tree = LayerTree(model)
    assert tree.totals() == keras_counts(model)
    generator = random.Random(seed)
    names = list(tree.paths()) + [alias for path in tree.paths() for alias in tree.aliases(path)]
    for _ in range(6):
        plan = {path for path in names if generator.random() < 0.4}
        tree.apply_frozen_paths(plan)
        wanted = frozenset(tree.canonical_path(path) for path in plan)
        assert tree.frozen_paths() == wanted
        for path in tree.paths():
            assert tree.layer(path).trainable == (path not in wanted), path
        assert tree.totals() == keras_counts(model)
        # The plan read back restores the same flags on a fresh copy of the architecture.
        fresh = several_parents_model()
        LayerTree(fresh).apply_frozen_paths(tree.frozen_paths())
        assert keras_counts(fresh) == keras_counts(model)
    for node in tree.nodes():
        weights = tree.layer(node.path).weights
        assert node.total_params == sum(math.prod(w.shape) for w in weights), node.path


# -------------------------------------- bulk actions count layers with weights (item 4)
def test_unfreeze_top_counts_only_layers_with_weights_on_the_bundled_model():
    from models.bundled import load_bundled_model

    model = load_bundled_model()
    tree = LayerTree(model)
    base = "digits_cnn/feature_extractor"
    tree.set_frozen(base, True)
    assert tree.totals().trainable == 165  # the classifier only
    assert [p.rsplit("/", 1)[-1] for p in tree.base_layer_paths(base)] == [
        "conv1",
        "batch_norm1",
        "conv2",
        "batch_norm2",
        "conv3",
        "batch_norm3",
    ]
    assert len(tree.base_layer_paths(base, include_weightless=True)) == 11
    tree.unfreeze_top(2, base)
    # conv3 (3*3*32*32, no bias) and batch_norm3's gamma and beta now train.
    assert tree.totals() == keras_counts(model)
    assert tree.totals().trainable == 165 + 3 * 3 * 32 * 32 + 2 * 32

    # Independent reference: the Keras recipe, by hand, on a fresh copy.
    reference = load_bundled_model()
    extractor = reference.get_layer("feature_extractor")
    extractor.trainable = False
    extractor.trainable = True
    weighted = [layer for layer in extractor.layers if layer.weights]
    for layer in extractor.layers[: extractor.layers.index(weighted[-2])]:
        layer.trainable = False
    assert keras_counts(reference) == tree.totals()
    trained = {w.path for w in model.trainable_weights}
    assert {w.path for w in reference.trainable_weights} == trained


def test_each_extra_top_layer_with_weights_adds_its_weights():
    from models.bundled import load_bundled_model

    model = load_bundled_model()
    tree = LayerTree(model)
    base = "digits_cnn/feature_extractor"
    weighted = tree.base_layer_paths(base)
    previous = None
    for num_layers in range(len(weighted) + 2):
        tree.unfreeze_top(num_layers, base)
        assert tree.totals() == keras_counts(model)
        trainable = tree.totals().trainable
        if previous is not None and num_layers <= len(weighted):
            added = tree.layer(weighted[-num_layers]).trainable_weights
            assert trainable - previous == sum(math.prod(w.shape) for w in added)
        previous = trainable
    assert tree.frozen_paths() == frozenset()  # more than there are: everything trains


def test_freeze_up_to_a_layer_without_weights_freezes_what_precedes_it():
    from models.bundled import load_bundled_model

    model = load_bundled_model()
    tree = LayerTree(model)
    base = "digits_cnn/feature_extractor"
    tree.freeze_up_to(f"{base}/relu2")
    at_relu = keras_counts(model)
    assert tree.totals() == at_relu
    assert not tree.layer(f"{base}/relu2").trainable and tree.layer(f"{base}/pool").trainable
    tree.freeze_up_to(f"{base}/batch_norm2")
    assert keras_counts(model) == at_relu  # the same weights freeze
    assert tree.layer(f"{base}/conv3").trainable
