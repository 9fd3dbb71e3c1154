"""One user's working state: their own model copy, freeze plan, dataset choice and training runs.

The dashboard keeps one `Workspace` per browser session. Shared, read-only things (a base
model's config and weights, a dataset's arrays) come in as `ModelTemplate` and `ImageDataset`;
everything a user changes (flags, weights, runs) lives only in their workspace.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from models.advisor import (
    AdvisorPlan,
    UnfreezeAdvice,
    advise,
    apply_plan,
    base_weight_parameters,
    default_budget,
)
from models.datasets import ImageDataset
from models.executor import Executor, LocalExecutor
from models.export import run_config
from models.forgetting import pretraining_task_accuracy
from models.job import Job, RunEnding
from models.layer_rates import layer_rates_frame
from models.lora import (
    LORA_TARGETS,
    LORA_VARIABLE_NAMES,
    LoraSetting,
    copy_weights_merging_adapters,
    enable_lora,
    lora_layers,
    lora_setting,
    lora_targets,
    why_not_lora,
)
from models.plans import FreezePlan
from models.template import ModelTemplate
from models.training import JobState, TrainingConfig, TrainingSlots
from models.transfer import TRANSFER_MODEL_NAME, build_transfer_model
from models.tree import LayerTree, ParameterCounts

MAX_RUNS_KEPT = 4


@dataclass
class Run:
    """One training run, with everything needed to show and compare it later.

    Attributes:
        run_id: 1, 2, 3... within the session.
        model_title: The base model's title at the time.
        dataset_title: The dataset's title.
        config: The `TrainingConfig`.
        frozen_paths: The freeze plan (paths whose flag is False) when the run started.
        adapters: The LoRA adapters (path -> `LoraSetting`) when the run started.
        adapter_parameters: Each adapter's parameters (`a` plus `b`), path -> count.
        layer_multipliers: With per-layer learning rates (`config.layer_rates`), each layer's
            multiplier (`models.layer_rates.layer_multipliers`) for the layers with weights;
            empty without them.
        pretraining_accuracy: For a bundled base, its accuracy on the task it was pretrained
            on (digits 0-4) with its original classifier, measured when the run ended: how
            much it forgot (`models.forgetting`); None for other bases or while it trains.
        counts: Trainable / non-trainable parameters when the run started.
        job: Its job, a `TrainingJob` or a `ScheduledJob`, read through the `Job` protocol.
        layer_order: Node paths in model order, for charts.
        depths: Node depth by path, for indented charts.
    """

    run_id: int
    model_title: str
    dataset_title: str
    config: TrainingConfig
    frozen_paths: frozenset[str]
    counts: ParameterCounts
    job: Job
    layer_order: list[str] = field(default_factory=list)
    depths: dict[str, int] = field(default_factory=dict)
    name: str = ""
    orphaned: bool = False
    adapters: dict[str, LoraSetting] = field(default_factory=dict)
    adapter_parameters: dict[str, int] = field(default_factory=dict)
    layer_multipliers: dict[str, float] = field(default_factory=dict)
    pretraining_accuracy: float | None = None

    @property
    def ending(self) -> RunEnding | None:
        """How the run ended (finished, stopped, failed, orphaned); None while it trains."""
        return RunEnding.of(self.job.progress().state, self.orphaned)

    @property
    def display_name(self) -> str:
        """The name the user gave the run, else "Run N"."""
        return self.name.strip() or f"Run {self.run_id}"

    @property
    def label(self) -> str:
        """Short name, e.g. "Run 2 · 3 epochs · lr 0.01"."""
        return f"Run {self.run_id} · {self.config.epochs} epochs · lr {self.config.learning_rate:g}"


class Workspace:
    """A session's own model (base + head for the chosen dataset), freeze plan and runs.

    Args:
        template: The base model to start from.
        dataset: The dataset the head is built for.
        seed: Seed for the new head's initial weights.
        slots: The server's `TrainingSlots` (a limit on concurrent training), if any.
        executor: Where runs train (`models.executor`); a `LocalExecutor` with `slots` when
            omitted.

    Example:
    >>> workspace = Workspace(template, load_bundled_dataset("digits_5_9"))
    >>> workspace.tree.set_frozen(workspace.base_path, True)
    >>> run = workspace.start_run(TrainingConfig(epochs=1), background=False)
    >>> run.job.verification().all_unchanged
    True
    """

    def __init__(
        self,
        template: ModelTemplate,
        dataset: ImageDataset,
        seed: int = 0,
        slots: TrainingSlots | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.slots = slots
        self.executor: Executor = executor or LocalExecutor(slots)
        self._run_ids = itertools.count(1)
        self.runs: list[Run] = []
        self._run_listeners: list[Callable[[Run], None]] = []
        self.revision = 0
        self.seed = seed
        self.template = template
        self.dataset = dataset
        self.model: keras.Model
        self.tree: LayerTree
        self._advice: tuple[tuple[int, int, int], UnfreezeAdvice] | None = None
        self._build(keep_plan=None)

    # ------------------------------------------------------------------------ building
    def _build(
        self,
        keep_plan: Iterable[str] | None,
        template: ModelTemplate | None = None,
        dataset: Any = None,
        *,
        adapters: Mapping[str, LoraSetting] | None = None,
        weights_from: LayerTree | None = None,
    ) -> None:
        """Builds base + head for (template, dataset); the workspace changes only on success.

        Args:
            keep_plan: The frozen paths to apply again (those that still exist), or None.
            template: A new template, or None for the current one.
            dataset: A new dataset, or None for the current one.
            adapters: LoRA adapters to put on the new model (path -> setting).
            weights_from: A tree of the old model whose layers' weights (adapters merged into
                their kernels) are copied onto the same paths of the new model.
        """
        template = template or self.template
        dataset = dataset if dataset is not None else self.dataset
        keras.utils.set_random_seed(self.seed)
        base = template.instantiate()
        model = build_transfer_model(
            base,
            dataset.input_shape,
            dataset.num_classes,
            rescaling=template.rescaling,
            preprocessing=template.preprocessing,
            input_dtype=dataset.x.dtype,
            name=TRANSFER_MODEL_NAME,
        )
        tree = LayerTree(model)
        if weights_from is not None:
            for path in tree.paths():
                if path in weights_from:
                    copy_weights_merging_adapters(weights_from.layer(path), tree.layer(path))
        if adapters:
            for path, setting in adapters.items():
                if path in tree:
                    enable_lora(tree.layer(path), setting)
            tree = LayerTree(model)  # the adapters' variables are new
        if keep_plan is not None:
            tree.apply_frozen_paths(set(keep_plan) & set(tree.paths()))
        self.template, self.dataset = template, dataset
        self.model, self.tree, self.base_path = model, tree, tree.path_of(base)
        self.revision += 1

    def _require_idle(self, action: str) -> None:
        if self.is_training:
            raise RuntimeError(
                f"Cannot {action} while training runs. Stop the run first or wait for it to end."
            )

    def set_template(self, template: ModelTemplate) -> None:
        """Switches to another base model (new head, freeze plan reset).

        Raises:
            ValueError: When the base cannot take the current dataset (e.g. images into a
                Dense base); the workspace keeps its model, plan and runs.
        """
        self._require_idle("change the model")
        self._build(keep_plan=None, template=template)

    def set_dataset(self, dataset: Any) -> None:
        """Switches dataset; rebuilds the head when the input shape or classes change.

        The freeze plan of the layers that still exist is kept.

        Raises:
            ValueError: When the data cannot be adapted to the base; nothing changes then.
        """
        self._require_idle("change the dataset")
        # The model's input dtype follows the data's (uint8 pixels are scaled inside it), and
        # Keras casts a batch of the other dtype silently: a new dtype needs a new model.
        same_shape = dataset.input_shape == self.dataset.input_shape and np.dtype(
            dataset.x.dtype
        ) == np.dtype(self.dataset.x.dtype)
        same_classes = dataset.num_classes == self.dataset.num_classes
        if same_shape and same_classes:
            self.dataset = dataset
        else:
            self._build(
                keep_plan=self.tree.frozen_paths(), dataset=dataset, adapters=self.lora_plan()
            )

    def configure(self, template: ModelTemplate, dataset: Any) -> None:
        """Switches model and dataset together (e.g. a CSV upload with its Dense base)."""
        self._require_idle("change the model and dataset")
        self._build(keep_plan=None, template=template, dataset=dataset)

    def reset_weights(self) -> None:
        """Restores the base's template weights and a new head, keeping the freeze plan and
        the LoRA adapters (new ones, at zero)."""
        self._require_idle("reset the weights")
        self._build(keep_plan=self.tree.frozen_paths(), adapters=self.lora_plan())

    # ---------------------------------------------------------------------------- LoRA
    def lora_plan(self) -> dict[str, LoraSetting]:
        """The layers with a LoRA adapter now: path -> `LoraSetting`, in model order."""
        adapted = {id(layer) for layer in lora_layers(self.model)}
        return {
            path: lora_setting(self.tree.layer(path))
            for path in self.tree.paths()
            if id(self.tree.layer(path)) in adapted
        }

    def set_lora(self, adapters: Mapping[str, LoraSetting | None]) -> None:
        """Makes the model's LoRA adapters exactly `adapters`; the freeze plan is kept.

        New adapters are added in place (Keras's `enable_lora`: the kernel stops training, the
        adapters start at zero, so the model computes the same function). Keras cannot remove
        or resize an adapter, so removing or changing one rebuilds the model and copies every
        layer's weights onto it with each trained adapter merged into its kernel (what Keras
        saves in a `.keras` file); the adapters kept start again from zero on the merged kernels.

        Args:
            adapters: Path (aliases accepted) -> `LoraSetting`, or None for no adapter there;
                layers not named lose their adapter.

        Raises:
            ValueError: For an unknown path or a layer Keras cannot adapt (the reason is said);
                nothing changes then.
            RuntimeError: While a run trains.
        """
        self._require_idle("change the LoRA adapters")
        wanted: dict[str, LoraSetting] = {}
        for path, setting in adapters.items():
            if setting is None:
                continue
            if not isinstance(setting, LoraSetting):
                raise TypeError(
                    f"LoRA settings must be LoraSetting or None; received "
                    f"{type(setting).__name__} for {path!r}."
                )
            canonical = self.tree.canonical_path(path)
            reason = why_not_lora(self.tree.layer(canonical))
            if reason is not None:
                raise ValueError(f"No LoRA adapter on '{canonical}': {reason}")
            wanted[canonical] = setting
        current = self.lora_plan()
        if current == wanted:
            return
        frozen = self.tree.frozen_paths()
        if all(wanted.get(path) == setting for path, setting in current.items()):
            for path, setting in wanted.items():
                if path not in current:
                    enable_lora(self.tree.layer(path), setting)
            self.tree = LayerTree(self.model)
            self.tree.apply_frozen_paths(frozen & set(self.tree.paths()))
            self.revision += 1
        else:
            self._build(keep_plan=frozen, adapters=wanted, weights_from=self.tree)

    def set_layer_lora(self, path: str, setting: LoraSetting | None) -> None:
        """Adds, changes (`setting`) or removes (None) the LoRA adapter of one layer."""
        plan: dict[str, LoraSetting | None] = dict(self.lora_plan())
        plan[self.tree.canonical_path(path)] = setting
        self.set_lora(plan)

    def lora_target_counts(self) -> dict[str, int]:
        """How many layers of the base each bulk LoRA recipe names, by recipe."""
        base = self.tree.layer(self.base_path)
        return {recipe: len(lora_targets(base, recipe)) for recipe in LORA_TARGETS}

    def lora_bulk(self, recipe: str, setting: LoraSetting) -> int:
        """Puts adapters of `setting` on the base's layers a recipe names (see `LORA_TARGETS`).

        Layers with an adapter already get `setting` too; other adapters stay.

        Args:
            recipe: "dense" (every Dense/EinsumDense of the base) or "attention" (the query and
                value projections of every MultiHeadAttention, KerasHub's recipe).
            setting: Rank and alpha.

        Returns:
            How many layers the recipe named (0 when the base has none).
        """
        targets = lora_targets(self.tree.layer(self.base_path), recipe)
        plan: dict[str, LoraSetting | None] = dict(self.lora_plan())
        for layer in targets:
            plan[self.tree.path_of(layer)] = setting
        self.set_lora(plan)
        return len(targets)

    # ------------------------------------------------------------------------ freezing
    def apply_plan(self, frozen_paths: Iterable[str], *, from_tree: bool = False) -> None:
        """Applies a freeze plan (see `LayerTree.apply_frozen_paths`).

        Args:
            frozen_paths: The paths to freeze; every other node is unfrozen.
            from_tree: True when the layer tree view itself sent the plan: its view already
                shows it, so the revision stays (views of the plan are redrawn otherwise).
        """
        self._require_idle("change the freeze plan")
        self.tree.apply_frozen_paths(frozen_paths)
        if not from_tree:
            self.revision += 1

    def refresh_views(self) -> None:
        """Bumps the revision so views of the plan redraw from the model's real flags."""
        self.revision += 1

    def bulk_action(self, action: str | FreezePlan, argument: Any = None) -> None:
        """Applies a named freeze plan (see `models.plans`) and bumps the revision.

        Args:
            action: A `FreezePlan`, or an action name: "freeze_all", "unfreeze_all",
                "freeze_base", "freeze_up_to" (argument: path), "unfreeze_top" (argument: how
                many of the base's top layers with weights train; see `LayerTree.unfreeze_top`),
                "freeze_batch_norm".
            argument: The action's argument, when it takes one.

        Raises:
            ValueError: For an unknown action or a bad argument.
        """
        self._require_idle("change the freeze plan")
        if isinstance(action, FreezePlan):
            plan = action
        else:
            plan = FreezePlan.from_action(action, argument)
        plan.apply(self.tree, self.base_path)
        self.revision += 1

    # ------------------------------------------------------------------------- advisor
    def _advice_key(self) -> tuple[int, int, int]:
        """What advice depends on: this model, this dataset, the weights after the last run."""
        return (id(self.model), id(self.dataset), len(self.runs))

    @property
    def advice(self) -> UnfreezeAdvice | None:
        """The latest `advise()` result while it still holds (same model, data and weights)."""
        if self._advice is None or self._advice[0] != self._advice_key():
            return None
        return self._advice[1]

    def advisor_budget_bounds(self) -> tuple[int, int]:
        """(default budget, most) in base parameters for the advisor (`models.advisor`)."""
        most = base_weight_parameters(self.tree, self.base_path)
        return default_budget(most), most

    def advise(self, budget: int) -> UnfreezeAdvice:
        """Ranks the base's layers on the chosen data and plans what to unfreeze in `budget`.

        The probe changes nothing (see `models.advisor.advise`); the advice is kept until the
        model, the data or the weights change (`advice`).

        Args:
            budget: How many of the base's parameters may train (the head is not counted).

        Returns:
            The `UnfreezeAdvice`: the ranking, the advisor's plan and "unfreeze top N" with the
            same budget.
        """
        self._require_idle("rank the layers")
        advice = advise(self.tree, self.dataset.x, self.dataset.y, budget, base_path=self.base_path)
        self._advice = (self._advice_key(), advice)
        return advice

    def apply_advice(self, *, top_n: bool = False) -> AdvisorPlan:
        """Applies the kept advice's plan (or its "unfreeze top N" baseline) to the tree.

        Raises:
            RuntimeError: When there is no current advice (call `advise` first).
        """
        self._require_idle("change the freeze plan")
        advice = self.advice
        if advice is None:
            raise RuntimeError(
                "No current advice for this model, data and weights: rank the layers first."
            )
        plan = advice.baseline if top_n else advice.plan
        apply_plan(self.tree, plan, self.base_path)
        self.revision += 1
        return plan

    # ------------------------------------------------------------------------ training
    @property
    def latest_run(self) -> Run | None:
        """The most recent run, or None."""
        return self.runs[-1] if self.runs else None

    @property
    def is_training(self) -> bool:
        """Whether the latest run is still pending or running."""
        run = self.latest_run
        return run is not None and run.job.progress().state in (
            JobState.PENDING,
            JobState.RUNNING,
        )

    def start_run(self, config: TrainingConfig, *, background: bool = True) -> Run:
        """Creates a run with the current plan and trains it (always freshly compiled).

        Args:
            config: Training settings.
            background: True trains in a thread and returns at once; False trains first.

        Returns:
            The new `Run` (also appended to `runs`; only the last MAX_RUNS_KEPT are kept).

        Raises:
            RuntimeError: When a run is already training.
            ValueError: When the data does not fit the model or the settings are invalid.
        """
        with self._lock:
            self._require_idle("start another run")
            job = self.executor.training_job(
                self.model, self.dataset.x, self.dataset.y, config=config, tree=self.tree
            )
            run = self._add_run(job, config)
        return self._train(run, background)

    def start_schedule(
        self, phases: tuple | list, config: TrainingConfig, *, background: bool = True
    ) -> Run:
        """Creates a run that trains in phases (see `models.schedule`), each recompiled.

        Args:
            phases: The `Phase`s, e.g. `two_phase_schedule(...)`.
            config: Shared settings (batch size, optimizer, split, seed, drift resolution).
            background: True trains in a thread; False trains first.

        Returns:
            The new `Run`.
        """
        with self._lock:
            self._require_idle("start another run")
            job = self.executor.scheduled_job(
                self.model, self.dataset.x, self.dataset.y, self.tree, self.base_path,
                tuple(phases), config,
            )  # fmt: skip
            run = self._add_run(job, job.config, name=" → ".join(phase.name for phase in phases))
        return self._train(run, background)

    def _layer_multipliers(self, config: TrainingConfig) -> dict[str, float]:
        """Each layer-with-weights' learning-rate multiplier under `config` (empty: none)."""
        if config.layer_rates is None:
            return {}
        frame = layer_rates_frame(config.layer_rates, self.tree, config.learning_rate)
        return dict(zip(frame["path"], frame["multiplier"].astype(float), strict=True))

    def _add_run(self, job: Job, config: TrainingConfig, name: str = "") -> Run:
        """Records a new run of `job` with the current plan (call with the lock held)."""
        nodes = self.tree.nodes()
        run = Run(
            run_id=next(self._run_ids),
            model_title=self.template.title,
            dataset_title=self.dataset.title,
            config=config,
            frozen_paths=job.frozen_paths,
            counts=job.parameter_counts,
            job=job,
            layer_order=[node.path for node in nodes],
            depths={node.path: node.depth for node in nodes},
            name=name,
            adapters=self.lora_plan(),
            adapter_parameters={
                node.path: sum(v.params for v in node.variables if v.name in LORA_VARIABLE_NAMES)
                for node in nodes
                if node.lora_rank is not None
            },
            layer_multipliers=self._layer_multipliers(config),
        )
        self.runs.append(run)
        del self.runs[:-MAX_RUNS_KEPT]
        job.add_done_callback(lambda _job: self._run_ended(run))
        return run

    def add_run_listener(self, listener: Callable[[Run], None]) -> None:
        """Calls `listener(run)` whenever one of this workspace's runs ends, however it ended.

        The listener runs in the job's own thread right after the run ended (not on the next
        page rerun), so a run is kept even when no page is left to show it.

        Args:
            listener: Called with the ended `Run` (its `ending` says how it ended).

        Example:
        >>> workspace.add_run_listener(lambda run: store.save(session_id, RunSnapshot.of(run)))
        """
        if not callable(listener):
            raise TypeError(f"`listener` must be callable; received {type(listener).__name__}.")
        with self._lock:
            self._run_listeners.append(listener)

    def _run_ended(self, run: Run) -> None:
        if run.job.progress().state is not JobState.FAILED:
            base = self.tree.layer(self.base_path)
            run.pretraining_accuracy = pretraining_task_accuracy(self.template.key, base)
        with self._lock:
            listeners = list(self._run_listeners)
        for listener in listeners:
            listener(run)  # DoneCallbacks logs a listener's failure

    @staticmethod
    def _train(run: Run, background: bool) -> Run:
        """Trains `run` in a background thread, or here until it ends; returns it."""
        if background:
            run.job.start()
        else:
            run.job.run()
        return run

    def run_config(self, run: Run) -> dict[str, Any]:
        """The run config of one of this workspace's runs (for export, restore and storage).

        Example:
        >>> workspace.run_config(workspace.latest_run)["training"]["epochs"]
        3
        """
        return run_config(
            self.template,
            self.dataset.name,
            run.dataset_title,
            run.frozen_paths,
            run.config,
            run.counts,
            run_id=run.run_id,
            adapters=run.adapters,
        )

    def continue_run_ids_after(self, last_run_id: int) -> None:
        """Numbers the next runs after `last_run_id` (runs restored from disk keep theirs)."""
        with self._lock:
            current = self.runs[-1].run_id if self.runs else 0
            self._run_ids = itertools.count(max(current, int(last_run_id)) + 1)

    def stop(self) -> None:
        """Asks the running job, if any, to stop after its current batch."""
        run = self.latest_run
        if run is not None:
            run.job.cancel()

    def stop_orphaned(self, seconds_gone: float) -> Run | None:
        """Stops the running job of a page that has been gone `seconds_gone` seconds.

        The run ends as `RunEnding.ORPHANED`, with a message saying why.

        Returns:
            The run that was stopped, or None when nothing was training.
        """
        run = self.latest_run
        if run is None or not self.is_training:
            return None
        run.orphaned = True
        run.job.cancel(
            f"Stopped by the server: the page was closed for {seconds_gone:.0f} s, longer than "
            "the grace period,"
        )
        return run
