"""The Train step's words for a run's progress (components.train_step)."""

from components.train_step import progress_text
from models.job import JobState, TrainingProgress


def progress(state: JobState, steps: list[float], batch: int = 0) -> TrainingProgress:
    return TrainingProgress(
        state=state, epoch=0, epochs=3, batch=batch, batches_per_epoch=45, history={},
        batch_history={"step": steps} if steps else {}, message="", elapsed_seconds=4.0,
        eta_seconds=None,
    )  # fmt: skip


def test_the_first_batch_says_the_training_step_is_compiling_until_a_step_is_done():
    assert "compiling the training step" in progress_text(progress(JobState.RUNNING, []))
    assert progress_text(progress(JobState.RUNNING, [])).startswith("Epoch 1/3 · batch 0/45")
    after = progress_text(progress(JobState.RUNNING, [1.0], batch=1))
    assert "compiling" not in after and "batch 1/45" in after
    assert "compiling" not in progress_text(progress(JobState.PENDING, []))
