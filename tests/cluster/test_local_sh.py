"""cluster/local.sh as the README uses it: default ports that Ray accepts, from any working directory."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT, DEFAULT_DASHBOARD_PORT, DEFAULT_PORT
from ray.scripts.scripts import start as ray_start

from hierpt.jobs.scheduler import auth_headers

LOCAL_SH = Path(__file__).resolve().parents[2] / "cluster" / "local.sh"
RAY_CLIENT_DEFAULT_PORT = 10001  # `ray start`'s default when the client server is on (ray/scripts/scripts.py)


def default_ports() -> dict[str, int]:
    return {name: int(port) for name, port in re.findall(r"\$\{(HIERPT_\w+_PORT):-(\d+)\}", LOCAL_SH.read_text())}


def test_default_ports_avoid_rays_defaults_its_worker_range_and_the_ephemeral_range():
    ports = default_ports()
    assert set(ports) == {"HIERPT_RAY_PORT", "HIERPT_CLIENT_PORT", "HIERPT_DASHBOARD_PORT", "HIERPT_AGENT_PORT"}
    assert len(set(ports.values())) == len(ports)
    options = {option.name: option.default for option in ray_start.params}
    workers = range(options["min_worker_port"], options["max_worker_port"] + 1)
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    taken_by_another_ray = {DEFAULT_PORT, DEFAULT_DASHBOARD_PORT, DEFAULT_DASHBOARD_AGENT_LISTEN_PORT,
                            RAY_CLIENT_DEFAULT_PORT}  # fmt: skip
    for name, port in ports.items():
        assert port not in workers, f"{name}={port} is in Ray's worker port range"
        assert port not in taken_by_another_ray, f"{name}={port} is one of Ray's own defaults"
        assert not low <= port <= high, f"{name}={port} is in the ephemeral port range {low}-{high}"


def _env(temp_dir: str, **extra: str) -> dict[str, str]:
    """No port overrides, no RAY, a PATH without the venv: what a fresh shell outside the repo has."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("HIERPT_") and k not in ("RAY", "RAY_ADDRESS")}
    return {**kept, "PATH": "/usr/bin:/bin", "HIERPT_RAY_TEMP_DIR": temp_dir, "HIERPT_NUM_CPUS": "1", **extra}


def test_a_port_in_rays_worker_range_is_refused_in_one_line(tmp_path):
    env = _env(str(tmp_path), HIERPT_CLIENT_PORT="10011", RAY=str(Path(sys.executable).parent / "ray"))
    done = subprocess.run([LOCAL_SH, "start"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "port 10011 lies in Ray's worker port range 10002-19999: pick another (HIERPT_*_PORT)"


@pytest.mark.integration
def test_start_with_default_ports_outside_the_repo_serves_the_jobs_api(tmp_path):
    """The README's `cluster/local.sh start` as written, run from another directory; stopped by its process group."""
    if not (LOCAL_SH.parents[1] / ".venv" / "bin" / "ray").exists():
        pytest.skip("no .venv in this checkout (local.sh then takes `ray` from PATH)")
    temp_dir = f"/tmp/hierpt-defaults-{os.getpid()}"  # short: Ray's socket paths must fit in 107 bytes
    env = _env(temp_dir)
    try:
        done = subprocess.run([LOCAL_SH, "start"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        address = done.stdout.strip().rsplit("RAY_API_SERVER_ADDRESS=", 1)[-1]
        assert address == f"http://127.0.0.1:{default_ports()['HIERPT_DASHBOARD_PORT']}"
        assert f"RAY_ADDRESS=127.0.0.1:{default_ports()['HIERPT_RAY_PORT']}" in done.stderr
        request = urllib.request.Request(f"{address}/api/version", headers=auth_headers())
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
    finally:
        subprocess.run([LOCAL_SH, "stop"], env=env, cwd=tmp_path, capture_output=True, timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running or stopped; a zombie (killed, not yet reaped by its parent) counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_node_kills_the_processes_that_left_the_nodes_process_group(tmp_path):
    """A stand-in node (no Ray): a process group whose child made a group of its own, as Ray's workers and job
    drivers do, and a grandchild in that group. `kill-node` leaves none of them."""
    script = "setsid bash -c 'sleep 300 & echo $! > worker; wait' & sleep 300 & echo $! > raylet; wait"
    node = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, start_new_session=True)
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "w1.pgid").write_text(f"{node.pid}\n")
    while not ((tmp_path / "worker").is_file() and (tmp_path / "raylet").is_file()):
        time.sleep(0.05)
    worker, raylet = (int((tmp_path / name).read_text()) for name in ("worker", "raylet"))
    assert os.getpgid(worker) != node.pid and _alive(worker)
    try:
        done = subprocess.run([LOCAL_SH, "kill-node", "w1"], env=_env(str(tmp_path)), capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        assert done.returncode == 0, done.stderr
        node.wait(timeout=10)
        assert not _alive(worker) and not _alive(raylet)
        assert not (tmp_path / "nodes" / "w1.pgid").exists()
        again = subprocess.run([LOCAL_SH, "kill-node", "w1"], env=_env(str(tmp_path)), capture_output=True, text=True,
                               timeout=30)  # fmt: skip
        assert again.returncode == 2 and again.stderr.strip() == f"no node w1 started from {tmp_path}"
    finally:
        for pid in (worker, raylet, node.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
