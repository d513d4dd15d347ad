"""The object-store settings that travel with Ray tasks and workers, and the ones that never do.

Credentials belong to the cluster: an instance profile / IRSA, a Kubernetes secret, or the environment
`ray start` ran in (cluster/local.sh). hierpt never puts a secret into a Ray runtime_env: the Jobs API serves
runtime_envs to anyone with cluster access, and Ray's agents log them in plain text. Only settings that say
where the store is travel, so tasks on any node reach the store their driver checked. For the same reason a
URL with credentials inside (`s3://KEY:SECRET@bucket/...`) is refused wherever hierpt accepts a URL: it would
end up in the scheduler's database, in command lines and in logs.

`storage_settings` is the one way these settings travel: prep's tasks, training's workers and the scheduler's
jobs all get them from it. A job spec's `env` list is something else: the user naming other variables their
job needs (jobs/specs.py refuses secret-looking ones unless the spec says they may be visible to cluster users).
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Names that usually hold a secret (API keys, tokens, passwords): forwarding one needs the explicit opt-in.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_KEY|AUTH", re.IGNORECASE)


def storage_settings() -> dict[str, str]:
    """This process's non-secret object-store settings, for a runtime_env."""
    return {name: os.environ[name] for name in SETTINGS if name in os.environ}


def s3_location() -> tuple[str | None, str | None]:
    """(region, endpoint) of the object store in this process's settings, as botocore reads them: the
    S3-specific endpoint first, and no credentials (for a filesystem that travels to other processes)."""
    env = storage_settings()
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    return region, env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")


def looks_secret(name: str) -> bool:
    return name in SECRETS or bool(SECRET_NAME.search(name))


def has_credentials(url: str) -> bool:
    """Whether a URL carries a user or password (`scheme://user:password@host/...`)."""
    if "://" not in url:
        return False
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:  # e.g. an unbalanced '[' in the host: not a URL hierpt could use either
        return "@" in url.split("://", 1)[1].split("/", 1)[0]


CREDENTIALS_IN_URL = (
    "a URL with credentials inside (scheme://user:password@...) is refused: they would be stored and logged "
    "in plain text; give the cluster its own credentials (README: Credentials)"
)
