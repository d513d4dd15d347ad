from pathlib import Path

import pytest

from hierpt.jobs.specs import load_spec
from hierpt.train.config import TrainJob
from hierpt.train.deepspeed_config import deepspeed_config
from hierpt.train.schedule import lr_at

REPO = Path(__file__).resolve().parents[2]


def job(**fields) -> TrainJob:
    return TrainJob.model_validate(
        {"name": "t", "storage": "/tmp/x", "data": {"shards": "/tmp/s"}, "steps": 10, **fields}
    )


def test_example_job_spec_loads():
    spec = load_spec(REPO / "jobs" / "tiny_pretrain.yaml")
    assert spec.zero_stage == 2 and spec.faults[0].kill_rank == 1
    assert spec.model.overrides == {}  # seq_words and max_word_bytes come from the shards


def test_yaml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: pretrain\nname: x\nstorage: /tmp/x\ndata: {shards: /s}\nsteps: 5\noptimizer: {warmup_steps: -1}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: optimizer.warmup_steps: "):
        load_spec(path)


def test_model_overrides_are_checked_against_hat_fields():
    assert (
        job(model={"preset": "tiny", "overrides": {"backbone": {"layers": 3}}}).model.build_config().backbone.layers
        == 3
    )
    with pytest.raises(ValueError, match="model.overrides.depth"):
        job(model={"overrides": {"depth": 3}}).model.build_config()


def test_worker_ranges_and_faults_are_validated():
    assert job(num_workers=[1, 4], global_batch=12).worker_range == (1, 4)
    with pytest.raises(ValueError, match="min <= max"):
        job(num_workers=[3, 2])
    with pytest.raises(ValueError, match="faults.0"):
        job(num_workers=2, faults=[{"kill_rank": 2, "at_step": 1}])


def test_gradient_accumulation_keeps_the_global_batch_fixed():
    spec = job(global_batch=16, micro_batch=2)
    for world_size, accumulation in ((1, 8), (2, 4), (4, 2), (8, 1)):
        config = deepspeed_config(spec, world_size)
        assert config["gradient_accumulation_steps"] == accumulation
        assert config["train_batch_size"] == 16
    with pytest.raises(ValueError, match="global_batch 16 is not a multiple of workers \\(3\\)"):
        deepspeed_config(spec, 3)


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_ten_percent():
    opt = job(optimizer={"lr": 1.0, "warmup_steps": 10}).optimizer
    assert lr_at(0, 110, opt) == pytest.approx(0.1)
    assert lr_at(9, 110, opt) == pytest.approx(1.0)
    assert lr_at(60, 110, opt) == pytest.approx(0.55)  # half way through the decay: (1 + 0.1) / 2
    assert lr_at(110, 110, opt) == pytest.approx(0.1)
    decay = [lr_at(s, 110, opt) for s in range(10, 111)]
    assert decay == sorted(decay, reverse=True)


def test_spot_settings_reach_ray_and_bad_ones_name_their_field(monkeypatch):
    from hierpt.train.run import controller_env

    spot = job(num_workers=[1, 2], elastic={"notice_poll_interval_s": 0.5, "worker_start_timeout_s": 20})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the embedded local Ray: no state tracking
    assert controller_env(spot) == {"RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "0.5",
                                    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20.0"}  # fmt: skip
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")  # a named cluster (a job's driver): the Train tab lists it
    assert controller_env(spot)["RAY_TRAIN_ENABLE_STATE_TRACKING"] == "1"
    assert spot.elastic.max_preemption_failures == -1 and spot.checkpoint.upload == "sync"
    with pytest.raises(ValueError, match="elastic.max_preemption_failures"):
        job(elastic={"max_preemption_failures": -2})
    with pytest.raises(ValueError, match="checkpoint.upload"):
        job(checkpoint={"upload": "later"})


def test_trackers_default_to_tensorboard_and_bad_lists_name_the_field(monkeypatch):
    assert job().run_tracking().trackers == ["tensorboard"]
    assert job().run_tracking().tensorboard_dir == "/tmp/x/t/tensorboard"
    assert job(storage="s3://bucket/runs").run_tracking().tensorboard_dir is None
    with pytest.raises(ValueError, match=r"tracking\.1\n  Input should be 'tensorboard', 'wandb' or 'mlflow'"):
        job(tracking=["tensorboard", "neptune"])
    with pytest.raises(ValueError, match="lists a tracker twice"):
        job(tracking=["wandb", "wandb"])
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "mlflow" else object())
    with pytest.raises(ValueError, match=r"mlflow not installed here \(pip install 'hierpt\[tracking\]'\)"):
        job(tracking=["mlflow"])


def test_deepspeed_is_imported_without_its_autotuners_mlflow_probe_and_mlflow_stays_importable():
    import subprocess
    import sys

    code = (
        "import sys; from hierpt.train.deepspeed_config import import_deepspeed; import_deepspeed(); "
        "from deepspeed.autotuning import autotuner; assert not autotuner.has_mlflow; "
        "assert 'mlflow' not in sys.modules; import mlflow"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
