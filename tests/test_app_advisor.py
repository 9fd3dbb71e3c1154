"""AppTest checks of the unfreeze advisor in the Freeze step: rank, read, apply in one click."""

from streamlit.testing.v1 import AppTest

from models.advisor import base_weight_parameters
from tests.app_helpers import open_tab
from tests.test_app import APP, BASE, button, keras_counts


def base_layers_that_train(workspace) -> set[str]:
    tree = workspace.tree
    return {path for path in tree.base_layer_paths(BASE) if tree.node(path).trainable_params > 0}


def test_the_advisor_ranks_the_base_and_applies_its_plan_in_one_click():
    at = AppTest.from_file(APP, default_timeout=120).run()
    open_tab(at, "2 · Freeze")
    workspace = at.session_state["workspace"]
    most = base_weight_parameters(workspace.tree, BASE)
    budget = next(n for n in at.number_input if n.label.startswith("Budget: base parameters"))
    assert budget.max == most
    budget.set_value(5_000).run()
    button(at, "Rank the layers").click().run()
    assert not at.exception, [e.value for e in at.exception]
    advice = workspace.advice
    assert advice is not None and advice.plan.budget == 5_000 and advice.plan.units
    # The plan is the ranking's greedy choice under the budget, BatchNorm left frozen.
    left, expected = 5_000, []
    for row in advice.ranking.itertuples():
        cost = row.parameters - row.batch_norm_parameters
        if not row.is_batch_norm and cost <= left:
            expected.append(row.unit)
            left -= cost
    assert list(advice.plan.units) == expected and advice.plan.base_parameters <= 5_000
    assert any(advice.plan.message() in s.value for s in at.success)
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert any("Relative gradient" in spec for spec in titles)
    weights_before = [w.numpy().copy() for w in workspace.model.weights]

    button(at, "Apply the advisor's plan").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert base_layers_that_train(workspace) == set(advice.plan.unfreeze_paths)
    trainable, _ = keras_counts(workspace.model)
    assert workspace.tree.totals().trainable == trainable
    head = trainable - workspace.tree.node(BASE).trainable_params
    assert trainable == head + advice.plan.base_parameters
    # Ranking and applying changed no weight.
    assert all(
        (w.numpy() == before).all()
        for w, before in zip(workspace.model.weights, weights_before, strict=True)
    )

    button(at, "Apply unfreeze top N instead").click().run()
    assert base_layers_that_train(workspace) == set(advice.baseline.unfreeze_paths)
