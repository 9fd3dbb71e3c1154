"""Benchmark 8: the unfreeze advisor's plan against "unfreeze the top N" and full fine-tuning.

On two pretrained bases, each under a new 5-class head, the same transfer task (the bundled
digits 5-9, the project's 80/20 stratified split, seed 0, batch 32) is trained from the same
starting weights under six freeze plans:

- head only: the base frozen, only the head trains;
- advisor, 25% / 75% budget: `probe_gradients` on 4 batches of 32 training examples, grouped
  into blocks (`group_blocks`), then `propose_plan` within a budget of 25% / 75% of the base's
  trainable-kind parameters (kernels, biases, gammas, betas; BatchNormalization's included in
  that total);
- top-N, same budgets: `top_n_plan`, the largest N of the base's top layers that fits;
- full fine-tune: every layer of the base trains.

Every plan trains with the same optimizer: Adam, the head at 1e-2 and every unfrozen base layer
at 1e-3 (`models.layer_rates`, base multiplier 0.1; the rates `levers.py` uses for its head-only
and full fine-tune levers), so plans differ only in which base layers train. BatchNormalization
layers stay frozen in every plan, full fine-tuning included (Keras's fine-tuning advice, and
what the advisor's plans do; `levers.py`'s full fine-tune trains them). The head always trains
and is not counted in the budget.

The bases:
- the bundled digits CNN, pretrained on digits 0-4 (`build_default_transfer_model`), 10
  epochs; forgetting as `levers.py` measures it (`models.forgetting`: the base's accuracy on
  digits 0-4 with its original classifier, after fine-tuning);
- keras.applications MobileNetV2 (alpha 0.35, 96 px, `common.mobilenet_transfer_model`), 5
  epochs. ImageNet weights are not in ~/.keras/models on an offline machine and this script
  never downloads, so the base starts from RANDOM initialisation (weights=None) and is then
  pretrained here, on all the bundled digits 0-4 for 6 epochs with everything trainable
  (`pretrain_mobilenet`; about a minute on 2 cores). Untrained, it is useless as a test bed:
  measured, every plan read chance (0.200) on a random-init base whose BatchNormalization
  layers are frozen at their initial statistics, and its gradients vanish towards the input
  (relative gradients 1e-12 at the stem), so the ranking only said "the top". Pretrained this
  way it also gets a forgetting measure like the bundled bases' (the model's accuracy on digits
  0-4 with its pretraining classifier put back).

Each plan is trained with plain `model.fit` (compiled afresh after the plan is applied, every
variable reset to the same starting values first, dropout's seed state included). The bundled
CNN trains each plan with 3 shuffling seeds (0, 1, 2: the mean accuracy is shown, the range in
brackets), MobileNetV2 with seed 0 only. A plan that names the same layers as an earlier one
(top-N with a budget too small for the top layer is "head only") is not trained again. Seconds
per epoch are the fastest epoch after the first (the first traces the step; the fastest, as
`timeit` advises, because other processes on a shared machine only ever add time).

The probe (4 batches of 32) is timed on its first call (cold, as a user meets it; for the
bundled CNN that is also the process's first gradient) and again (warm), and reported as a
ratio of one epoch of the advisor's 25% plan (target <= 2 epochs' time) and of full
fine-tuning. Everything is measured in this one run; nothing is asserted. The whole script takes
about 3 minutes on 2 cores. `--markdown` prints the README table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from common import (
    BenchmarkResult,
    epoch_timer_callback,
    median,
    mobilenet_transfer_model,
    report,
)

BATCH_SIZE = 32
BUDGET_FRACTIONS = (0.25, 0.75)
HEAD_LEARNING_RATE = 1e-2
VALIDATION_FRACTION = 0.2
PROBE_BATCHES = 4
PROBE_TARGET = 2.0
BUNDLED = "bundled digits CNN"
MOBILENET = "MobileNetV2 0.35, 96 px (pretrained here)"
EPOCHS = {BUNDLED: 10, MOBILENET: 5}
SEEDS = {BUNDLED: (0, 1, 2), MOBILENET: (0,)}
MOBILENET_PRETRAINING_EPOCHS = 6
BASE_RATE_MULTIPLIER = 0.1


def pretrain_mobilenet(model: Any, tree: Any) -> Callable[[], float]:
    """Pretrains the random-init MobileNetV2 model on digits 0-4 in place, then resets its head.

    Everything trains (Adam 1e-3, batch 32) for `MOBILENET_PRETRAINING_EPOCHS` epochs on all
    the bundled digits 0-4, with the BatchNormalization momentum lowered to 0.9 during it (the
    application's 0.999 would leave the moving statistics at their initial values after a few
    hundred steps, and inference mode would then be meaningless). The classifier then gets
    back its initial weights: the transfer task starts from a pretrained base and a new head.

    Returns:
        A function measuring forgetting as `models.forgetting` does for the bundled bases: the
        model's accuracy on digits 0-4 with the pretrained classifier put back (inference
        mode), the classifier restored afterwards.
    """
    import keras
    import numpy as np

    from models.datasets import load_bundled_dataset

    pretraining = load_bundled_dataset("digits_0_4")
    classifier = model.get_layer("classifier")
    new_head = [weight.copy() for weight in classifier.get_weights()]
    batch_norms = [tree.layer(path) for path in tree.batch_norm_paths()]
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.9
    tree.unfreeze_all()
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(
        pretraining.x,
        pretraining.y,
        epochs=MOBILENET_PRETRAINING_EPOCHS,
        batch_size=BATCH_SIZE,
        shuffle=True,
        verbose=0,
    )
    for layer, momentum in zip(batch_norms, momenta, strict=True):
        layer.momentum = momentum
    pretrained_head = [weight.copy() for weight in classifier.get_weights()]
    classifier.set_weights(new_head)

    def forgetting() -> float:
        current = classifier.get_weights()
        classifier.set_weights(pretrained_head)
        predictions = np.argmax(model.predict(pretraining.x, batch_size=128, verbose=0), axis=1)
        classifier.set_weights(current)
        return float(np.mean(predictions == pretraining.y))

    return forgetting


def build(base_name: str) -> tuple[Any, Any, Callable[[], float]]:
    """Returns (model, tree, forgetting measure) for one base, pretrained, with a new head."""
    import keras

    from models.bundled import build_default_transfer_model
    from models.catalogue import bundled_template
    from models.forgetting import pretraining_task_accuracy
    from models.tree import LayerTree

    if base_name == MOBILENET:
        model, tree = mobilenet_transfer_model()
        return model, tree, pretrain_mobilenet(model, tree)
    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    key = bundled_template("bundled_digits_cnn").key
    base = tree.layer(tree.default_base_path())
    return model, tree, lambda: pretraining_task_accuracy(key, base)


def make_plans(tree: Any, ranking: Any) -> list[tuple[str, Any]]:
    """The six plans of one base: (name, AdvisorPlan)."""
    from models.advisor import propose_plan, top_n_plan

    total = int(ranking.parameters.sum())
    plans = [("head only", top_n_plan(tree, 0))]
    for fraction in BUDGET_FRACTIONS:
        budget = int(fraction * total)
        plans.append((f"advisor, {fraction:.0%} budget", propose_plan(ranking, budget)))
        plans.append((f"top-N, {fraction:.0%} budget", top_n_plan(tree, budget)))
    plans.append(("full fine-tune", propose_plan(ranking, total)))
    return plans


def train_plan(
    model: Any, tree: Any, plan: Any, start_weights: list, data: tuple, epochs: int, seed: int
) -> dict[str, Any]:
    """Trains one plan from the starting weights with one shuffling seed; returns its numbers."""
    import keras

    from models.advisor import apply_plan
    from models.layer_rates import LayerRates, layer_rate_optimizer_class, variable_multipliers

    x_train, y_train, x_validation, y_validation = data
    for variable, value in zip(model.variables, start_weights, strict=True):
        variable.assign(value)  # every variable: get_weights leaves out dropout's seed state
    apply_plan(tree, plan)
    rates = LayerRates({plan.base_path: BASE_RATE_MULTIPLIER})
    optimizer = layer_rate_optimizer_class(keras.optimizers.Adam)(
        variable_multipliers=variable_multipliers(rates, tree), learning_rate=HEAD_LEARNING_RATE
    )
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = epoch_timer_callback()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_validation, y_validation),
        epochs=epochs,
        batch_size=BATCH_SIZE,
        shuffle=True,
        verbose=0,
        callbacks=[timer],
    )
    return {
        "base_parameters_trained": int(tree.node(plan.base_path).trainable_params),
        "trainable_params": tree.totals().trainable,
        "epoch_seconds": timer.durations,
        "validation_accuracy": float(history.history["val_accuracy"][-1]),
    }


def run_plan(
    model: Any,
    tree: Any,
    plan: Any,
    start_weights: list,
    data: tuple,
    base_name: str,
    forgetting: Callable[[], float],
) -> dict[str, Any]:
    """Trains one plan once per seed of its base; returns the averaged row."""
    runs = []
    for seed in SEEDS[base_name]:
        run = train_plan(model, tree, plan, start_weights, data, EPOCHS[base_name], seed)
        run["forgetting_accuracy"] = forgetting()
        runs.append(run)
    accuracies = [run["validation_accuracy"] for run in runs]
    timed = [seconds for run in runs for seconds in run["epoch_seconds"][1:]]
    return {
        "base_parameters_trained": runs[0]["base_parameters_trained"],
        "planned_base_parameters": plan.base_parameters,
        "trainable_params": runs[0]["trainable_params"],
        "seconds_per_epoch": min(timed),
        "median_seconds_per_epoch": median(timed),
        "validation_accuracy": sum(accuracies) / len(accuracies),
        "validation_accuracies": accuracies,
        "forgetting_accuracy": sum(run["forgetting_accuracy"] for run in runs) / len(runs),
        "seeds": list(SEEDS[base_name]),
        "units": list(plan.units),
        "message": plan.message(),
    }


def run_base(base_name: str) -> tuple[list[dict], dict]:
    """Probes and trains every plan on one base; returns the plan rows and the probe's row."""
    import numpy as np

    from models.advisor import group_blocks, probe_gradients
    from models.datasets import load_bundled_dataset
    from models.splits import train_validation_split

    dataset = load_bundled_dataset("digits_5_9")
    data = train_validation_split(dataset.x, dataset.y, VALIDATION_FRACTION, seed=0)
    model, tree, forgetting = build(base_name)
    pretraining_accuracy = forgetting()
    start_weights = [np.array(variable.numpy(), copy=True) for variable in model.variables]
    probe_seconds = []
    for _ in range(2):  # the first call is cold (as a user meets it), the second warm
        started = time.perf_counter()
        layers = probe_gradients(
            tree, data[0], data[1], num_batches=PROBE_BATCHES, batch_size=BATCH_SIZE
        )
        probe_seconds.append(time.perf_counter() - started)
    ranking = group_blocks(layers)
    rows: list[dict] = []
    trained: dict[tuple[str, ...], dict] = {}
    for plan_name, plan in make_plans(tree, ranking):
        row = {"base": base_name, "plan": plan_name, "budget": plan.budget, "same_as": None}
        if plan.unfreeze_paths in trained:  # the same layers as an earlier plan: not retrained
            earlier = trained[plan.unfreeze_paths]
            row.update({k: v for k, v in earlier.items() if k not in row}, same_as=earlier["plan"])
            row.update(units=list(plan.units), message=plan.message())
        else:
            row.update(run_plan(model, tree, plan, start_weights, data, base_name, forgetting))
            trained[plan.unfreeze_paths] = row
        rows.append(row)
        print(f"{base_name} / {plan_name}: {row['message']}", flush=True)
    by_plan = {row["plan"]: row for row in rows}
    advisor_epoch = by_plan[f"advisor, {BUDGET_FRACTIONS[0]:.0%} budget"]["seconds_per_epoch"]
    probe = {
        "base": base_name,
        "pretraining_accuracy": pretraining_accuracy,
        "probe_seconds": probe_seconds[0],
        "warm_probe_seconds": probe_seconds[1],
        "probe_examples": layers.attrs["num_examples"],
        "ranking_units": len(ranking),
        "base_layers_with_weights": len(layers),
        "top_units": ranking.unit.head(5).tolist(),
        "epochs_of_advisor_plan": probe_seconds[0] / advisor_epoch,
        "epochs_of_full_fine_tune": probe_seconds[0]
        / by_plan["full fine-tune"]["seconds_per_epoch"],
        "epochs_of_head_only": probe_seconds[0] / by_plan["head only"]["seconds_per_epoch"],
    }
    return rows, probe


def _accuracy_cell(row: dict) -> str:
    accuracies = row["validation_accuracies"]
    if len(accuracies) == 1:
        return f"{accuracies[0]:.3f}"
    return f"{row['validation_accuracy']:.3f} ({min(accuracies):.3f}-{max(accuracies):.3f})"


def markdown(rows: list[dict], probes: list[dict]) -> str:
    """The README tables: one line per base and plan, then the probe's cost per base."""
    lines = [
        "| Base | Plan | Base params trained | Trainable params | s / epoch | "
        "Digits 5-9 val. acc. | Digits 0-4 acc. after |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        plan = row["plan"] + (f" (= {row['same_as']})" if row["same_as"] else "")
        lines.append(
            f"| {row['base']} | {plan} | {row['base_parameters_trained']:,} | "
            f"{row['trainable_params']:,} | {row['seconds_per_epoch']:.2f} | "
            f"{_accuracy_cell(row)} | {row['forgetting_accuracy']:.3f} |"
        )
    lines += [
        "",
        "| Base | Probe s (first call / again) | Probe / epoch of the advisor's 25% plan | "
        "Probe / full fine-tune epoch | Top-ranked units |",
        "|---|---:|---:|---:|---|",
    ]
    for probe in probes:
        lines.append(
            f"| {probe['base']} | {probe['probe_seconds']:.2f} / "
            f"{probe['warm_probe_seconds']:.2f} | {probe['epochs_of_advisor_plan']:.2f} | "
            f"{probe['epochs_of_full_fine_tune']:.2f} | {', '.join(probe['top_units'][:3])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    arguments = parser.parse_args()
    rows: list[dict] = []
    probes: list[dict] = []
    for base_name in (BUNDLED, MOBILENET):
        base_rows, probe = run_base(base_name)
        rows += base_rows
        probes.append(probe)
    if arguments.markdown:
        print(markdown(rows, probes))
    results = []
    for probe in probes:
        ratio = probe["epochs_of_advisor_plan"]
        results.append(
            BenchmarkResult(
                name=f"advisor_probe_epochs_{_slug(probe['base'])}",
                measured=ratio,
                unit="epochs",
                target=f"<= {PROBE_TARGET:g}",
                met=ratio <= PROBE_TARGET,
                details=probe,
            )
        )
    for row in rows:
        results.append(
            BenchmarkResult(
                name=f"advisor_{_slug(row['base'])}_{_slug(row['plan'])}",
                measured=row["validation_accuracy"],
                unit="val acc",
                target="reported",
                met=None,
                details=row,
            )
        )
    report(results)


def _slug(text: str) -> str:
    """A result-name fragment: lower case, words joined by underscores."""
    kept = "".join(character if character.isalnum() else " " for character in text.lower())
    return "_".join(kept.split())


if __name__ == "__main__":
    main()
