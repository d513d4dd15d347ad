"""The cluster configs users deploy: valid against Ray's own schema, and consistent with the job specs."""

import json
import os
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_launcher_yaml_is_valid_against_the_schema_shipped_with_ray():
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    config = load("aws.yaml")
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))  # and after Ray fills in the provider defaults


def test_launcher_schema_check_rejects_a_typo():
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    config = load("aws.yaml")
    config["available_node_types"]["gpu_spot"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        jsonschema.validate(config, schema)


def test_launcher_head_runs_no_training_and_workers_are_spot():
    config = load("aws.yaml")
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    workers = config["available_node_types"]["gpu_spot"]
    assert workers["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_manifests_have_the_structure_the_operator_expects(name):
    manifest = load(name)
    assert manifest["apiVersion"] == "ray.io/v1"
    cluster = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
    assert manifest["kind"] in ("RayCluster", "RayJob")
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["name"] == "ray-head"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"]
    if manifest["kind"] == "RayJob":
        assert manifest["spec"]["entrypoint"].startswith("hierpt ")


def test_worker_ranges_match_the_elastic_range_of_the_pretrain_spec():
    """One Ray Train worker per GPU: nodes x GPUs per node must span the spec's [min, max] workers."""
    from hierpt.jobs.specs import load_spec

    low, high = load_spec(CLUSTER.parent / "jobs" / "pretrain_1b.yaml").worker_range
    spot = load("aws.yaml")["available_node_types"]["gpu_spot"]
    gpus = spot["resources"]["GPU"]
    assert (spot["min_workers"] * gpus, spot["max_workers"] * gpus) == (low, high)
    for name in ("kuberay/raycluster.yaml", "kuberay/rayjob.yaml"):
        manifest = load(name)
        cluster = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
        group = cluster["workerGroupSpecs"][0]
        gpus = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        assert (group["minReplicas"] * gpus, group["maxReplicas"] * gpus) == (low, high)


def test_credentials_are_the_clusters_own_and_no_config_holds_a_secret():
    """Issue 12.1: KubeRay pods read a Kubernetes Secret, launcher nodes an instance profile; nothing literal."""
    for name in ("kuberay/raycluster.yaml", "kuberay/rayjob.yaml"):
        manifest = load(name)
        cluster = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for container in (c for g in groups for c in g["template"]["spec"]["containers"]):
            assert {"secretRef": {"name": "hierpt-s3"}} in container["envFrom"], (name, container["name"])
            assert not any("SECRET" in e.get("name", "") and "value" in e for e in container.get("env", []))
        assert "AWS_" not in manifest["spec"].get("runtimeEnvYAML", "")
    config = load("aws.yaml")
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")
    text = "".join((CLUSTER / name).read_text() for name in ("aws.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"))
    assert "AWS_SECRET_ACCESS_KEY=" not in text.replace("AWS_SECRET_ACCESS_KEY=...", "")
