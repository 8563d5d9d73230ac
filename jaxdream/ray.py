"""Batch dreaming on a Ray cluster through Ray Data (the optional extra: ``pip install "jaxdream[ray]"``).

The driver plans the run exactly as ``batch`` does (the same batches, names and seed-drawn schedules, from the whole
input list) and streams the plan's batch indices through ``Dataset.map_batches`` into ``DreamBatches`` actors.
Each actor loads the model once, plans once, keeps its compiled programs (and shares the disk store where its
folder is shared), and dreams the batches it is handed with ``batch``'s own pipeline, writing the same files and
manifest records (into ``manifest.ray-<worker>.jsonl``). Ray restarts a dead actor and retries its batch; at the
end the parts are merged into ``manifest.jsonl`` as ``batch merge`` does. Every worker must see the input and
output folders at the same paths (one machine, or a shared file system).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxdream import interrupts
from jaxdream.batch import Job, Summary, plan_run, run_batch
from jaxdream.compiled.store import DISABLE_ENV
from jaxdream.errors import JaxdreamError, OptionError
from jaxdream.files import HOME_ENV
from jaxdream.model import load_model
from jaxdream.outputs import output_folder
from jaxdream.protocol import Model
from jaxdream.shards import Assigned, merge, worker_name, write_plan

CPUS_PER_ACTOR = 4  # JAX spreads one dream over a machine's cores: more actors than this on a CPU only contend


@dataclass(frozen=True)
class RayRun:
    """What every actor needs to load the model and plan the run as the driver did: names, never loaded objects,
    so it travels to any machine of the cluster."""

    model: str
    weights: str | None
    preprocess: str | None
    labels: str | None
    job: Job
    inputs: tuple[Path, ...]
    out: Path
    batch_size: int
    resume: bool


class DreamBatches:
    """A ``Dataset.map_batches`` callable class: rows ``{"batch": k}`` (indices into the run's plan) in, one row per
    call out: ``done`` and ``errors`` (a JSON list of [input, message]), and the call's compile and
    run seconds. The model and the plan are made once per actor, in its constructor."""

    def __init__(self, run: RayRun) -> None:
        self.run = run
        self.model = load_model(run.model, run.weights, preprocess=run.preprocess, labels=run.labels)
        self.plan = plan_run(self.model, run.job, list(run.inputs), run.out, run.batch_size, skip_done=run.resume)
        self.worker = worker_name()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        run = self.run
        summary = run_batch(self.model, run.job, list(run.inputs), run.out, run.batch_size, plan=self.plan,
                            shard=Assigned(frozenset(int(k) for k in rows["batch"]), self.worker))
        stats = summary.stats
        return {"done": np.array([summary.done]), "errors": np.array([json.dumps(summary.errors)]),
                "compiled": np.array([stats.programs_compiled]), "loaded": np.array([stats.programs_loaded]),
                "compile_seconds": np.array([stats.compile_seconds]), "run_seconds": np.array([stats.run_seconds])}


def dream_on_ray(model: Model, run: RayRun, *, address: str | None = None, actors: int | None = None,
                 progress: Callable[[int, int], None] | None = None, reads: dict[str, Any] | None = None) -> Summary:
    """Dream ``run`` on Ray: join the cluster at ``address`` (None: ``RAY_ADDRESS``, else a new local instance;
    a session already started in this process is used as it is), plan with ``model`` (the driver's copy, for the
    plan only), stream the batches still to do through ``actors`` ``DreamBatches`` actors (default: one per GPU,
    else one per 4 CPUs), then merge the manifests. ``progress(images finished, images to do)``."""
    ray = _import_ray()
    start = time.perf_counter()
    output_folder(run.out)
    inputs = list(run.inputs)
    plan = plan_run(model, run.job, inputs, run.out, run.batch_size, reads, skip_done=run.resume)
    write_plan(run.out, plan.key, inputs, run.batch_size)
    todo = [k for k, b in enumerate(plan.batches) if any(str(p.resolve()) not in plan.finished for p in b.paths)]
    todo += [len(plan.batches)] * bool(plan.unreadable)  # the unreadable inputs: tried again, as a lone run does
    images = sum(str(p.resolve()) not in plan.finished for k in todo if k < len(plan.batches)
                 for p in plan.batches[k].paths) + len(plan.unreadable)
    summary = Summary(sizes=plan.sizes, skipped=len(inputs) - images)
    if progress and images:
        progress(0, images)
    started = not ray.is_initialized()
    if started:
        _join(ray, address)
    try:
        for row in _stream(ray, run, todo, actors):
            summary.done += int(row["done"])
            summary.errors += [tuple(pair) for pair in json.loads(str(row["errors"]))]
            summary.stats.programs_compiled += int(row["compiled"])
            summary.stats.programs_loaded += int(row["loaded"])
            summary.stats.compile_seconds += float(row["compile_seconds"])
            summary.stats.run_seconds += float(row["run_seconds"])
            if progress:
                progress(summary.done + len(summary.errors), images)
            interrupts.check()
    finally:
        if started:
            ray.shutdown()  # the actors go with the session: Ctrl-C stops them too
    merge(run.out)
    summary.seconds = time.perf_counter() - start
    return summary


def _stream(ray: Any, run: RayRun, todo: list[int], actors: int | None) -> Iterator[dict[str, Any]]:
    """The rows of the dataset of batch indices mapped through the actors, the dataset's execution stopped (its
    actors killed) when the caller stops early."""
    if not todo:
        return
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if actors is not None and actors < 1:
        raise OptionError(f"--ray-actors {actors} must be at least 1")
    count = actors or (gpus or max(1, cpus // CPUS_PER_ACTOR))
    ask = {"num_gpus": 1} if gpus else {"num_cpus": max(1, cpus // count)}
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # jaxdream's own progress counts images
    dataset = ray.data.from_items([{"batch": k} for k in todo], override_num_blocks=len(todo)).map_batches(
        DreamBatches, fn_constructor_kwargs={"run": run}, batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(count, len(todo))), **ask)
    rows = iter(dataset.iter_rows())
    try:
        yield from rows
    except ray.exceptions.RayError as err:
        raise JaxdreamError(f"a Ray worker failed: {_cause(err)}") from None
    finally:
        rows.close()  # stops the dataset's execution and its actors, in a session that goes on too


def _cause(err: BaseException) -> str:
    """The worker's own error message, not Ray's traceback around it."""
    cause = getattr(err, "cause", None)
    return str(cause) if cause is not None else str(err).strip().splitlines()[-1]


def _join(ray: Any, address: str | None) -> None:
    """Connect to the cluster (or start a local one); an existing cluster's workers get this process's jaxdream
    environment (the compiled-program store), so a shared store is shared."""
    forwarded = {name: os.environ[name] for name in (HOME_ENV, DISABLE_ENV) if name in os.environ}
    _check_listening(address or os.environ.get("RAY_ADDRESS", ""))
    try:
        with warnings.catch_warnings():
            # Ray starts its processes with fork + exec, which JAX (imported to plan) warns of; exec makes it safe.
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            ray.init(address=address or None, include_dashboard=False, logging_level=logging.ERROR,
                     runtime_env={"env_vars": forwarded} if forwarded and (address or "RAY_ADDRESS" in os.environ)
                     else None)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise OptionError(f"--ray {address or ''}: cannot join a Ray cluster ({err}); give its address (auto, "
                          "HOST:6379, ray://HOST:10001) or none for a new local one") from None


def _check_listening(address: str, seconds: float = 10.0) -> None:
    """Refuse an address where nothing answers: Ray itself would retry it for minutes without a word."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or no address: Ray finds (or starts) the local instance itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as err:
        raise OptionError(f"--ray {address}: nothing answers there ({err.strerror or err}); start the cluster "
                          "(`ray start --head`) or give its address (HOST:6379, ray://HOST:10001, auto)") from None


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise OptionError("--ray needs Ray Data: pip install \"jaxdream[ray]\"") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plan and progress lines: jaxdream shows its own
    return ray


__all__ = ["DreamBatches", "RayRun", "dream_on_ray"]
