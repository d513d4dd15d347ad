"""Where a driver's Ray comes from (prep, train, run, demo): the cluster the user named, or a local Ray of its own.

A cluster is named by RAY_ADDRESS (or a command's `--ray-address`, which sets it): a GCS address `host:port`
(`cluster/local.sh start` prints it), `ray://host:port` (Ray Client), or `auto` (Ray's own discovery). Nothing
named: a fresh local Ray, stopped at the end. Not Ray's default discovery, which follows
`/tmp/ray/ray_current_cluster` to whatever `ray start` ran last on the machine, dead or alive (issue 16: a stale
file hung `ray.init()` for 10 minutes).

An `http(s)://` address is a dashboard, where the Jobs API lives: `hierpt jobs` takes it (`--address`,
$RAY_API_SERVER_ADDRESS as for `ray job`, or $RAY_ADDRESS); a driver refuses it and says what to set instead.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

from hierpt.console import ray_logging_level, ray_runtime_env, verbose

ANSWER_TIMEOUT_S = 5.0  # a named cluster that does not take a connection within this fails, naming its address


def named_cluster(address: str | None = None, allow_jobs_api: bool = False) -> str | None:
    """`address`, else RAY_ADDRESS, if set, checked: (unless `auto`) one that takes a connection, and a driver's
    address unless `allow_jobs_api` (`hierpt jobs`, which submits to the dashboard)."""
    address = (address or os.environ.get("RAY_ADDRESS", "")).strip()
    if not address:
        return None
    if not allow_jobs_api and address.startswith(("http://", "https://")):
        raise ValueError(
            f"RAY_ADDRESS={address} is a Jobs API (dashboard) address: for `hierpt jobs` set "
            f"RAY_API_SERVER_ADDRESS={address} instead; to run this command on that cluster set RAY_ADDRESS to its "
            "GCS address host:port (cluster/local.sh start prints it); unset RAY_ADDRESS for a local Ray"
        )
    if address != "auto":
        check_answers(address)
    return address


def check_answers(address: str) -> None:
    """The address (GCS, Ray Client or Jobs API) takes a TCP connection within seconds, else one line naming it."""
    parsed = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parsed.hostname, parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    except ValueError:  # a port that is not a number
        host = port = None
    if not host or not port:
        raise ValueError(f"{address}: expected host:port (GCS), ray://host:port or http(s)://host:port (Jobs API)")
    try:
        socket.create_connection((host, port), timeout=ANSWER_TIMEOUT_S).close()
    except OSError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


@contextmanager
def ray_session(**init_options) -> Iterator[None]:
    """Ray for the block: a caller's running Ray as it is (tests, notebooks, a demo around a train), else the
    named cluster, else a fresh local Ray; what this opened it closes (which also ends the forwarding of worker
    logs, so a caller's last printed line is its own). The workers of a local Ray know their cluster's address
    (hierpt.console.worker_setup): the machine may run other Ray instances, a cluster's head runs one."""
    import ray

    if ray.is_initialized():
        yield
        return
    if not verbose():  # Ray's notice that it turned on token auth, its default for a new local cluster
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    address = named_cluster()
    if address is None:
        init_options["runtime_env"] = ray_runtime_env()
    ray.init(address=address or "local", logging_level=ray_logging_level(), **init_options)
    try:
        yield
    finally:
        ray.shutdown()
