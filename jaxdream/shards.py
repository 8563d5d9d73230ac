"""Past one machine without a coordinator: shards, claims and one merge (the shape of T5X's sharded inference,
Slurm job arrays and Kubernetes Indexed Jobs). Dreaming one image needs no collective, so workers share nothing
but the output folder:

- **Shards** (``--shard I/N``): batch ``k`` of the plan (planned from the whole input list, exactly as one process
  plans it) belongs to shard ``k % N``. Each shard writes its images and ``manifest.shard-I-of-N.jsonl``; any shard
  can be rerun or resumed alone, on any machine that sees the folder.
- **Claims** (``--claim``): workers take batches one by one through lease files in ``.jaxdream-leases/`` of the
  output folder, so a fast worker takes more and a dead worker's batch is taken again once its lease expires.
- **Merge** (``jaxdream batch merge OUT``): one ``manifest.jsonl`` from every manifest in the folder, checked
  against the plan (``batch-plan.json``): what is missing, failed or done twice.

What the folder must provide (a local disk, NFS v3+, most cluster file systems): creating a file with O_EXCL is
atomic, and so is renaming a file within a folder. A lease expires ``lease_seconds`` after its file was last
touched (its mtime, set by the file server's clock, against the reader's clock): keep the machines' clocks in
step (NTP) and the lease time far above their skew. After an expiry race two workers may dream one batch; they
write byte-identical files (each atomically) and the merge keeps one record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxdream.errors import OptionError
from jaxdream.files import write_atomically
from jaxdream.manifests import read_records_of, verified

PLAN = "batch-plan.json"
LEASES = ".jaxdream-leases"
DEFAULT_LEASE_SECONDS = 300.0


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``."""

    index: int
    count: int

    @property
    def manifest(self) -> str:
        return f"manifest.shard-{self.index}-of-{self.count}.jsonl"

    def owns(self, batch: int) -> bool:
        return batch % self.count == self.index


@dataclass(frozen=True)
class Assigned:
    """The batches a scheduler (Ray Data) handed to ``worker``, recorded in ``manifest.ray-<worker>.jsonl``."""

    batches: frozenset[int]
    worker: str

    @property
    def manifest(self) -> str:
        return f"manifest.ray-{self.worker}.jsonl"

    def owns(self, batch: int) -> bool:
        return batch in self.batches


Share = Shard | Assigned  # a worker's fixed part of the whole plan


def parse_shard(text: str) -> Shard:
    """'I/N' (I counted from 0) -> Shard; one clear error otherwise."""
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count)) if sep else None
    except ValueError:
        shard = None
    if shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise OptionError(f"--shard {text!r}: write I/N, shard I of N counted from 0 (0/4 .. 3/4)")
    return shard


def shard_from_environment(shards: int | None) -> Shard:
    """The shard a job array gives this task (``--shard auto``, or ``--shards N`` alone): Slurm's
    (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP of SLURM_ARRAY_TASK_COUNT (a range such as
    --array=0-15 or 10-40:2, not a list), or Kubernetes' JOB_COMPLETION_INDEX of ``shards``."""
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env and shards is None:
        first = _whole(env.get("SLURM_ARRAY_TASK_MIN", "0"), "SLURM_ARRAY_TASK_MIN")
        step = max(1, _whole(env.get("SLURM_ARRAY_TASK_STEP", "1"), "SLURM_ARRAY_TASK_STEP"))
        offset = _whole(env["SLURM_ARRAY_TASK_ID"], "SLURM_ARRAY_TASK_ID") - first
        count = _whole(env["SLURM_ARRAY_TASK_COUNT"], "SLURM_ARRAY_TASK_COUNT")
        if offset % step or not 0 <= offset // step < count:
            raise OptionError(f"SLURM_ARRAY_TASK_ID {env['SLURM_ARRAY_TASK_ID']} is not task k of an array "
                              f"{first}, {first + step}, ... ({count} tasks): shard with a range (--array=0-15), or "
                              "give --shard I/N")
        return Shard(offset // step, count)
    if "JOB_COMPLETION_INDEX" in env:
        if shards is None:
            raise OptionError("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): give the job's completions "
                              "as --shards N")
        return parse_shard(f"{_whole(env['JOB_COMPLETION_INDEX'], 'JOB_COMPLETION_INDEX')}/{shards}")
    raise OptionError("--shard auto and --shards read a job array's index, and none is set here (Slurm: "
                      "SLURM_ARRAY_TASK_ID; Kubernetes: JOB_COMPLETION_INDEX): give --shard I/N")


def _whole(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"{name}={text!r} is not a whole number") from None


def plan_id(job_key: str, inputs: list[Path], batch_size: int) -> str:
    """The run a plan describes: the job, the whole input list and the batch size, so that every worker of one
    command computes the same id, and a run with other inputs or options another."""
    text = json.dumps([job_key, [str(p.resolve()) for p in inputs], batch_size])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_plan(out: Path, job_key: str, inputs: list[Path], batch_size: int) -> str:
    """Record the run's plan in ``out`` (each worker writes the same bytes); refuse a folder planned for another
    run. Returns the plan's id."""
    run = plan_id(job_key, inputs, batch_size)
    path = out / PLAN
    if path.is_file():
        try:
            held = json.loads(path.read_text(encoding="utf-8")).get("run")
        except (OSError, ValueError, AttributeError):
            held = None
        if held != run:
            raise OptionError(f"{path} plans another run (other inputs, options or batch size): shards and claims "
                              "of one run share a folder; finish and merge that run, or use another --out")
        return run
    plan = {"run": run, "job": job_key, "batch_size": batch_size, "inputs": [str(p.resolve()) for p in inputs]}
    write_atomically(path, json.dumps(plan, indent=1) + "\n", "the run's plan")
    return run


def read_plan(out: Path) -> dict[str, Any]:
    """The plan a sharded or claimed run left in ``out``."""
    path = out / PLAN
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"{out}: no {PLAN} here: merge reads the folder of a run made with --shard or "
                          "--claim") from None
    except (OSError, ValueError) as err:
        raise OptionError(f"{path}: not a readable plan ({err}); rerun one shard to write it again") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("inputs"), list) or not isinstance(plan.get("job"), str):
        raise OptionError(f"{path}: not a plan jaxdream wrote (edited?); rerun one shard to write it again")
    return plan


def worker_name() -> str:
    """This worker as lease files and its manifest name it: host, process and a random part."""
    host = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Claims:
    """Batches claimed through lease files: ``.jaxdream-leases/<run>/batch-K.lease`` (created exclusively,
    holding the worker's name, kept alive by touching it) and ``batch-K.done`` once its images are recorded."""

    out: Path
    run: str
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    worker: str = field(default_factory=worker_name)
    taken_over: int = 0  # expired leases this worker took

    def __post_init__(self) -> None:
        if not self.lease_seconds > 0:
            raise OptionError(f"--lease-seconds {self.lease_seconds}: a lease must last some time (> 0)")
        self.folder = self.out / LEASES / self.run
        self.folder.mkdir(parents=True, exist_ok=True)
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="jaxdream-lease", daemon=True)
        self._beat.start()

    @property
    def manifest(self) -> str:
        return f"manifest.claim-{self.worker}.jsonl"

    def _lease(self, batch: int) -> Path:
        return self.folder / f"batch-{batch:06d}.lease"

    def is_done(self, batch: int) -> bool:
        return (self.folder / f"batch-{batch:06d}.done").exists()

    def try_claim(self, batch: int) -> bool:
        """Take ``batch`` if it is neither done nor leased by a live worker."""
        if self.is_done(batch):
            return False
        lease = self._lease(batch)
        try:
            age = time.time() - lease.stat().st_mtime
        except FileNotFoundError:
            age = None
        if age is not None:
            if age < self.lease_seconds:
                return False
            try:  # expired: whoever renames it away first may take the batch
                lease.rename(lease.with_name(f"{lease.name}.expired-{self.worker}"))
            except FileNotFoundError:
                return False
            self.taken_over += 1
        try:
            fd = os.open(lease, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"worker": self.worker, "taken": time.time()}) + "\n")
        if self.is_done(batch):  # finished by another worker while we looked
            lease.unlink(missing_ok=True)
            return False
        with self._lock:
            self._held.add(batch)
        return True

    def finish(self, batch: int) -> None:
        """The batch's images are written and recorded: mark it done and let the lease go."""
        write_atomically(self.folder / f"batch-{batch:06d}.done", self.worker + "\n", "a claim's done mark")
        self.release(batch)

    def release(self, batch: int) -> None:
        """Let the lease go (a batch given back unfinished can be taken at once), unless it is no longer ours: a
        lease that expired and was taken over belongs to its new holder."""
        with self._lock:
            self._held.discard(batch)
        lease = self._lease(batch)
        try:
            holder = json.loads(lease.read_text(encoding="utf-8")).get("worker")
        except (OSError, ValueError, AttributeError):
            return
        if holder == self.worker:
            lease.unlink(missing_ok=True)

    def reopen(self, batches: Iterable[int]) -> None:
        """Take the done marks off ``batches`` (their images failed, or were replaced since): --resume redoes them."""
        for batch in batches:
            (self.folder / f"batch-{batch:06d}.done").unlink(missing_ok=True)

    def batches(self, count: int, poll: float = 0.5) -> Iterator[int]:
        """Claim and yield batches 0 .. count - 1 until every one is done: the free ones in order, then, while
        others hold some, waiting for them to finish or for their leases to expire."""
        while True:
            waiting = False
            for batch in range(count):
                if self.is_done(batch):
                    continue
                if self.try_claim(batch):
                    yield batch
                else:  # held by another worker (our own are being written)
                    waiting = waiting or not (self.is_done(batch) or batch in self._held)
            if not waiting:
                return
            time.sleep(poll)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            with self._lock:
                held = list(self._held)
            for batch in held:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(self._lease(batch))

    def close(self) -> None:
        """Stop the heartbeat and give back what is still held."""
        self._stop.set()
        for batch in list(self._held):
            self.release(batch)


@dataclass
class Merged:
    """What ``merge`` found: done, failed, missing and duplicated inputs, and the manifest it wrote."""

    done: int
    failed: list[str]
    missing: list[str]
    duplicated: int  # inputs recorded done by two workers (after an expired lease): the same bytes, one kept
    manifest: Path

    @property
    def complete(self) -> bool:
        return not self.missing


PARTS = ("manifest.shard-*.jsonl", "manifest.claim-*.jsonl", "manifest.ray-*.jsonl")


def merge(out: Path) -> Merged:
    """The manifests of the shards, claim workers and Ray actors of ``out`` merged into ``manifest.jsonl``: per
    input of the plan, in the plan's order, the record of its finished images (whose files are still the ones
    recorded) or else its latest error. Records already in ``manifest.jsonl`` count too (a plain run's, an earlier
    merge's), and those of other jobs there are kept."""
    plan = read_plan(out)
    inputs: list[str] = [str(p) for p in plan["inputs"]]
    planned = set(inputs)
    done: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, Any]] = {}
    others, duplicated = [], 0
    merged = out / "manifest.jsonl"
    parts = [*sorted(p for pattern in PARTS for p in out.glob(pattern)), merged]  # the parts' records first
    for part in parts:
        for record in read_records_of(part):
            source = record.get("input")
            if record.get("job") != plan["job"] or source not in planned:
                if part == merged and record.get("status") != "end":
                    others.append(record)
                continue
            if record.get("status") == "done" and verified(out, record):
                if source in done:
                    duplicated += part != merged  # the merged manifest repeats what the parts hold
                    continue
                done[source] = record
            elif record.get("status") == "error":
                errors[source] = record
    lines = others + [record for record in (done.get(s) or errors.get(s) for s in inputs) if record is not None]
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in lines)
    return Merged(done=len(done), failed=[s for s in inputs if s in errors and s not in done],
                  missing=[s for s in inputs if s not in done and s not in errors], duplicated=duplicated,
                  manifest=write_atomically(merged, text, "the merged manifest"))


__all__ = ["Assigned", "Claims", "Merged", "Shard", "Share", "merge", "parse_shard", "read_plan",
           "shard_from_environment", "write_plan"]
