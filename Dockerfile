# syntax=docker/dockerfile:1
# The image cluster/kuberay/*.yaml and cluster/aws.yaml run: Ray's own image of the release hierpt pins (its
# Python 3.11, and the tools KubeRay's probes call), torch first (so DeepSpeed's unpinned `torch` cannot pull
# another build), then hierpt with the `eval` extra (eval jobs' downstream tasks). One Dockerfile, two variants:
#   docker build --build-arg VARIANT=cpu  -t ghcr.io/hierpt/hierpt:0.1.0-cpu .    # heads, CPU-only clusters
#   docker build --build-arg VARIANT=cuda -t ghcr.io/hierpt/hierpt:0.1.0-cuda .   # GPU workers
# tests/cluster/test_image.py keeps the versions here, in pyproject.toml, the Makefile and the cluster files equal.
ARG VARIANT=cuda

FROM rayproject/ray:2.60.0-py311-cpu AS cpu
ARG TORCH_SPEC=torch==2.13.0
RUN pip install --no-cache-dir "${TORCH_SPEC}" --index-url https://download.pytorch.org/whl/cpu
ENV DS_ACCELERATOR=cpu

FROM rayproject/ray:2.60.0-py311-gpu AS cuda
ARG TORCH_SPEC=torch==2.13.0
RUN pip install --no-cache-dir "${TORCH_SPEC}"

FROM ${VARIANT} AS hierpt
WORKDIR /home/ray/hierpt
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users hierpt ./hierpt
RUN pip install --no-cache-dir ".[eval]"
# Job specs and corpus recipes: a RayJob's entrypoint (`hierpt run jobs/...`) runs in this directory.
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users data_prep ./data_prep
