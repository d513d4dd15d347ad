"""The object-store settings that travel with Ray tasks and workers, and the ones that never do.

Credentials belong to the cluster: an instance profile / IRSA, a Kubernetes secret, or the environment
`ray start` ran in (cluster/local.sh). hierpt never puts a secret into a Ray runtime_env: the Jobs API serves
runtime_envs to anyone with cluster access, and Ray's agents log them in plain text. Only settings that say
where the store is travel, so tasks on any node reach the store their driver checked.
"""

from __future__ import annotations

import os

SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def storage_settings() -> dict[str, str]:
    """This process's non-secret object-store settings, for a runtime_env."""
    return {name: os.environ[name] for name in SETTINGS if name in os.environ}
