"""The eval job the scheduler queues for a committed checkpoint: the run's URL and evaluation settings, as
the training spec has them (no Ray: Ray's record of the run is stubbed)."""

from hierpt.jobs import scheduler
from hierpt.jobs.specs import parse_spec
from hierpt.jobs.store import Store


def test_a_committed_checkpoint_gets_an_eval_job_with_the_runs_settings(tmp_path, monkeypatch):
    training = parse_spec({
        "kind": "pretrain", "name": "r", "storage": "s3://bucket/runs/", "data": {"shards": "/s"}, "steps": 4,
        "env": ["AWS_REGION"], "evaluate": {"text": "/held.jsonl", "prompts": ["Der "], "sampling": {"max_words": 3}},
    })  # fmt: skip
    asked = []
    monkeypatch.setattr(scheduler, "committed_checkpoints", lambda url: asked.append(url) or [(2, f"{url}/step-2")])
    store = Store(tmp_path / "db.sqlite")
    store.add_job("train-1", "pretrain", training.model_dump(mode="json"), "r")
    scheduler.Scheduler(store, client=None)._queue_checkpoint_evals()

    assert asked == ["s3://bucket/runs/r"]
    (queued,) = store.jobs(kind="eval")
    spec = parse_spec(queued.spec)
    assert (spec.checkpoint, spec.output) == ("s3://bucket/runs/r/step-2", "s3://bucket/runs/r/evals/step-00000002")
    assert (spec.prompts, spec.sampling.max_words, spec.env) == (["Der "], 3, ["AWS_REGION"])
