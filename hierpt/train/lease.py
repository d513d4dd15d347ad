"""One trainer per run: a lease file in run storage, taken by conditional create, kept alive by a heartbeat.

Two trainers on one run interleave their checkpoints and overwrite each other's state, so a trainer takes the
run's lease before it reads or writes anything of the run, and a second one is refused (`RunBusy`, exit 2).
Leases are numbered generations (`<run>/_lease/00000007.json`): taking the run means creating the next
generation with create-if-absent (an exclusive open locally, `If-None-Match: *` on S3), so of two trainers
starting at once exactly one wins. The holder rewrites its file every `heartbeat_s`; a holder that died without
releasing (SIGKILL, lost node) blocks the run only until `ttl_s` after its last heartbeat. A later attempt of
the same scheduler job takes the run over at once: the scheduler sends attempt n+1 only after Ray has ended or
forgotten attempt n (hierpt/jobs/scheduler.py).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

import fsspec

LEASE_JOB = "HIERPT_JOB"  # set by the scheduler in each submission's runtime env: which job and attempt
LEASE_ATTEMPT = "HIERPT_JOB_ATTEMPT"
DIRECTORY = "_lease"


class RunBusy(ValueError):
    """Another live trainer holds the run (a ValueError: the job's own error, not worth a resubmit)."""


class Lease:
    def __init__(self, run_url: str, ttl_s: float = 120.0, heartbeat_s: float | None = None):
        self.run_url = run_url
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s or ttl_s / 6
        self.fs, root = fsspec.core.url_to_fs(run_url)
        self.directory = f"{root.rstrip('/')}/{DIRECTORY}"
        self.owner = {
            "job": os.environ.get(LEASE_JOB),
            "attempt": int(os.environ.get(LEASE_ATTEMPT, "0")),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self.path: str | None = None
        self.generation = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *_) -> None:
        self.release()

    def acquire(self) -> None:
        generation, holder = self._current()
        if holder is not None and not self._may_take_over(holder):
            age = time.time() - holder["heartbeat"]
            raise RunBusy(
                f"run {self.run_url} is being trained by {_describe(holder)} (last heartbeat {age:.0f} s ago; "
                f"its lease expires {holder['ttl_s']:.0f} s after the last one): refusing a second trainer"
            )
        path = f"{self.directory}/{generation + 1:08d}.json"
        self.fs.makedirs(self.directory, exist_ok=True)
        try:
            with self.fs.open(path, "xb") as f:  # create-if-absent: O_EXCL locally, If-None-Match on S3
                f.write(self._document())
        except OSError as error:
            if not _already_exists(error):
                raise
            raise RunBusy(f"run {self.run_url}: another trainer took the run at the same moment") from None
        self.path, self.generation = path, generation + 1
        for number, older in self._generations():  # the newest generation alone says who holds the run
            if number <= generation:
                self.fs.rm_file(older)
        self._thread = threading.Thread(target=self._beat, name="hierpt-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        if self.path is None:
            return
        self._stop.set()
        self._thread.join()
        if self._still_mine():
            self.fs.pipe_file(self.path, self._document(released=True))
        self.path = None

    def _may_take_over(self, holder: dict) -> bool:
        if holder.get("released") or time.time() > holder["heartbeat"] + holder["ttl_s"]:
            return True
        job = self.owner["job"]
        return job is not None and holder["job"] == job and holder["attempt"] < self.owner["attempt"]

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._still_mine():
                    print(f"hierpt: lost the lease of run {self.run_url} to a newer trainer", file=sys.stderr)
                    return
                self.fs.pipe_file(self.path, self._document())
            except OSError as error:  # storage hiccup: the next beat tries again, well before the lease expires
                print(f"hierpt: lease heartbeat of {self.run_url} failed: {error}", file=sys.stderr)

    def _still_mine(self) -> bool:
        generations = self._generations()
        return bool(generations) and generations[-1][0] == self.generation

    def _document(self, released: bool = False) -> bytes:
        body = {**self.owner, "heartbeat": time.time(), "ttl_s": self.ttl_s, "released": released}
        return json.dumps(body).encode()

    def _generations(self) -> list[tuple[int, str]]:
        self.fs.invalidate_cache(self.directory)
        try:
            names = self.fs.ls(self.directory, detail=False)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            stem = name.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
            if stem.isdigit():
                found.append((int(stem), name))
        return sorted(found)

    def _current(self) -> tuple[int, dict | None]:
        """The newest generation and its holder. An unreadable file is a winner still writing it (a local
        exclusive create is empty until written) or one that died mid-write: it holds the run for our ttl from
        its modification time, so a contender that reads it half-written cannot take the run too."""
        generations = self._generations()
        if not generations:
            return 0, None
        generation, path = generations[-1]
        try:
            holder = json.loads(self.fs.cat_file(path))
            holder["heartbeat"], holder["ttl_s"] = float(holder["heartbeat"]), float(holder["ttl_s"])
        except FileNotFoundError:
            return generation, None
        except (ValueError, KeyError, TypeError):
            try:
                written = self.fs.modified(path).timestamp()
            except FileNotFoundError:
                return generation, None
            return generation, {"job": None, "attempt": 0, "heartbeat": written, "ttl_s": self.ttl_s}
        return generation, holder


def _already_exists(error: OSError) -> bool:
    """A failed create-if-absent: FileExistsError locally; S3 answers 412 Precondition Failed."""
    text = str(error).lower()
    return isinstance(error, FileExistsError) or "pre-condition" in text or "precondition" in text


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "a trainer whose lease file is not written yet"
    who = f"job {holder['job']} attempt {holder['attempt']}" if holder.get("job") else "a trainer"
    return f"{who} (pid {holder.get('pid')} on {holder.get('host')})"
