"""The cluster image (Dockerfile): pinned bases of the Ray release hierpt pins, the install pyproject.toml
describes, and the image names the cluster files run. Built only when asked (a CPU build installs torch and
DeepSpeed: minutes, more than CI's budget) and a Docker daemon answers; linted always."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE = "ghcr.io/hierpt/hierpt"
CLUSTER_FILES = ("aws.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml")


def stages() -> dict[str, str]:
    """Stage name -> the image or stage it starts from."""
    return {name: base for base, name in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)$", DOCKERFILE, re.M)}


def variants() -> set[str]:
    return {name for name, base in stages().items() if not base.startswith("$")}


def referenced_images() -> list[str]:
    texts = [(ROOT / "cluster" / name).read_text() for name in CLUSTER_FILES]
    return [image for text in texts for image in re.findall(r"image:\s*(\S+)", text)]


def test_bases_are_pinned_to_the_ray_release_hierpt_pins():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ray_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray["))
    assert ray.__version__.startswith(ray_pin.split("==")[1].rstrip("*"))
    for variant in variants():
        base = stages()[variant]
        repository, _, tag = base.partition(":")
        assert repository == "rayproject/ray" and tag.startswith(f"{ray.__version__}-py311-"), base
    for name in CLUSTER_FILES[1:]:
        manifest = yaml.safe_load((ROOT / "cluster" / name).read_text())
        cluster = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
        assert cluster["rayVersion"] == ray.__version__


def test_torch_is_the_makefiles_and_the_install_uses_pyprojects_extras():
    makefile_torch = re.search(r"^TORCH_SPEC \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert set(re.findall(r"^ARG TORCH_SPEC=(\S+)$", DOCKERFILE, re.M)) == {makefile_torch}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = re.findall(r'pip install --no-cache-dir "\.\[([\w,]+)\]"', DOCKERFILE)
    assert installed and all(set(group.split(",")) <= set(extras) for group in installed)
    assert "eval" in installed[0].split(",") and "dev" not in installed[0]  # eval jobs' tasks; no test tools


def test_what_the_image_copies_is_sent_to_the_build():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for sources in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", DOCKERFILE, re.M):
        for source in sources.split():
            assert source in allowed and (ROOT / source).exists(), source


def test_the_cluster_files_run_this_images_variants_of_this_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = referenced_images()
    assert images and {image.rpartition(":")[0] for image in images} == {IMAGE}
    tags = {image.rpartition(":")[2] for image in images}
    assert tags == {f"{version}-{variant}" for variant in variants()}  # both variants, each somewhere
    for name in CLUSTER_FILES:  # heads run no GPU work: the CPU variant; GPU workers the CUDA one
        text = (ROOT / "cluster" / name).read_text()
        assert f"{IMAGE}:{version}-cpu" in text and f"{IMAGE}:{version}-cuda" in text, name


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.integration
@pytest.mark.skipif(os.environ.get("HIERPT_TEST_DOCKER_BUILD") != "1" or not _docker_answers(),
                    reason="set HIERPT_TEST_DOCKER_BUILD=1 with a Docker daemon to build the image")  # fmt: skip
def test_the_cpu_image_builds_and_runs_hierpt():
    tag = "hierpt-test:cpu"
    subprocess.run(["docker", "build", "--build-arg", "VARIANT=cpu", "-t", tag, str(ROOT)], check=True, timeout=3600)
    shown = subprocess.run(["docker", "run", "--rm", tag, "hierpt", "model-info", "tiny", "--json"],
                           capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    assert '"total"' in shown.stdout
