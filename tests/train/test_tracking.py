from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hierpt.train.config import RunTracking
from hierpt.train.tracking import Tracker, log_eval

EVAL_RESULT = {"model": "hat", "step": None, "all": {"bits_per_byte": 2.5}, "langs": {"fi": {"bits_per_byte": 3.0}}}


def attempt(tracking: RunTracking, first_step: int, last_step: int, offset: float) -> Tracker:
    """One training attempt logging steps first..last (loss = offset + step), the spec as hyperparameters."""
    tracker = Tracker(tracking, first_step=first_step)
    tracker.hparams({"steps": last_step, "optimizer": {"lr": 1e-3, "betas": [0.9, 0.95]}, "init_from": None},
                    ["train/loss"])  # fmt: skip
    for step in range(first_step, last_step + 1):
        tracker.log({"train/loss": offset + step}, step)
    return tracker


def test_a_resumed_run_leaves_one_value_per_step_and_eval_results_join_its_event_files(tmp_path):
    tracking = RunTracking(run_url=str(tmp_path / "run"), trackers=["tensorboard"], tensorboard_dir=str(tmp_path / "tb"))
    attempt(tracking, 1, 6, offset=0).close()  # interrupted after step 6; the last checkpoint was at step 3
    log_eval(tracking, EVAL_RESULT, step=3)
    attempt(tracking, 4, 8, offset=100).close()  # the resume: steps 4-8 again
    log_eval(tracking, {**EVAL_RESULT, "all": {"bits_per_byte": 2.0}}, step=6)

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert losses == [(1, 1), (2, 2), (3, 3), (4, 104), (5, 105), (6, 106), (7, 107), (8, 108)]
    assert [(e.step, e.value) for e in events.Scalars("eval/all/bits_per_byte")] == [(3, 2.5), (6, 2.0)]
    assert [e.value for e in events.Scalars("eval/langs/fi/bits_per_byte")] == [3.0, 3.0]
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")  # the spec, in the run's own files


def test_wandb_offline_and_mlflow_file_store_get_the_same_scalars(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store without a database
    tracking = RunTracking(run_url=str(tmp_path / "run"), trackers=["wandb", "mlflow"])
    tracker = attempt(tracking, 1, 3, offset=0)
    wandb_run = tracker.sinks[0].run
    assert wandb_run.summary["train/loss"] == 3 and wandb_run.config["optimizer.lr"] == 1e-3
    tracker.close()
    log_eval(tracking, EVAL_RESULT, step=3)
    assert list((tmp_path / "wandb").glob("offline-run-*"))

    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("hierpt").experiment_id])
    assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["init_from"] == "None"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [(1, 1), (2, 2), (3, 3)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/all/bits_per_byte")] == [(3, 2.5)]
