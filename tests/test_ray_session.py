"""Which Ray a driver gets: a named cluster that answers, else a fresh local Ray, never a stale `ray start`'s."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hierpt.ray_session import ANSWER_TIMEOUT_S, named_cluster


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


def test_nothing_named_is_no_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert named_cluster() is None


def test_a_jobs_api_address_is_refused_saying_what_to_set(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8275")
    with pytest.raises(ValueError, match="RAY_API_SERVER_ADDRESS=http://127.0.0.1:8275 instead") as refused:
        named_cluster()
    assert "\n" not in str(refused.value)


def test_the_jobs_api_takes_its_dashboard_address_checked_like_a_drivers(monkeypatch):
    from_env, given = ("http://" + _dead_address() for _ in range(2))
    monkeypatch.setenv("RAY_ADDRESS", from_env)
    with pytest.raises(ConnectionError, match=f"cannot reach the Ray cluster at {from_env}"):
        named_cluster(allow_jobs_api=True)
    with pytest.raises(ConnectionError, match=f"cannot reach the Ray cluster at {given}"):
        named_cluster(given, allow_jobs_api=True)  # the address given comes before RAY_ADDRESS


@pytest.mark.parametrize("prefix", ["", "ray://"])
def test_a_dead_cluster_fails_within_seconds_naming_its_address(monkeypatch, prefix):
    address = prefix + _dead_address()
    monkeypatch.setenv("RAY_ADDRESS", address)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the Ray cluster at {address}: Connection refused"):
        named_cluster()
    assert time.monotonic() - started < ANSWER_TIMEOUT_S + 1


def test_a_malformed_address_is_named(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1")
    with pytest.raises(ValueError, match="127.0.0.1: expected host:port"):
        named_cluster()


@pytest.mark.integration
def test_a_stale_current_cluster_file_does_not_stop_the_local_default():
    """Ray's default discovery reads $RAY_TMPDIR/ray/ray_current_cluster (here a private one holding a dead
    address, not the machine's /tmp/ray): `ray.init()` would wait on that dead GCS; the session starts its own."""
    ray_tmp = tempfile.mkdtemp(prefix="hp-stale-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    stale = _dead_address()
    (Path(ray_tmp) / "ray").mkdir()
    (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text(stale)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    program = (
        "import ray\nfrom hierpt.ray_session import ray_session\n"
        "with ray_session(num_cpus=1, include_dashboard=False):\n"
        "    print(ray.get_runtime_context().gcs_address)\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", program], env={**env, "RAY_TMPDIR": ray_tmp},
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    address = done.stdout.strip().splitlines()[-1]
    assert address != stale and address.startswith("127.0.0.1:")
