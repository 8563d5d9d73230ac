"""Timings of compiled programs, kept apart: compile time is never counted as run time."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxdream.files import write_report


@dataclass
class RunStats:
    """Timings of the compiled programs, kept apart: compile time is never counted as run time."""

    compile_seconds: float = 0.0  # tracing, lowering and compiling programs this process had not seen
    load_seconds: float = 0.0  # loading programs another process compiled (the warm-start store)
    run_seconds: float = 0.0
    iterations: int = 0
    programs_compiled: int = 0
    programs_loaded: int = 0
    program_peak_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        per_iter = 1000.0 * self.run_seconds / self.iterations if self.iterations else None
        return {"compile_seconds": self.compile_seconds, "load_seconds": self.load_seconds,
                "run_seconds": self.run_seconds, "iterations": self.iterations, "ms_per_iteration": per_iter,
                "programs_compiled": self.programs_compiled, "programs_loaded": self.programs_loaded,
                "program_peak_bytes": self.program_peak_bytes, **self.extra}


def report(stats: RunStats | Mapping[str, Any], **phases: Any) -> dict[str, Any]:
    """The one ``--stats`` schema of every command: where it ran (device, platform, JAX version, machine), then
    the run's statistics, then the command's own phases and sizes."""
    import jax

    counts = stats.as_dict() if isinstance(stats, RunStats) else dict(stats)
    return {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
            "jax_version": jax.__version__, "machine": platform.machine(), **counts, **phases}


def write_stats(path: str | Path | None, stats: RunStats | Mapping[str, Any], **phases: Any) -> None:
    """Write ``report(stats, **phases)`` as JSON to ``path`` (nothing when None)."""
    if path is not None:
        write_report(path, json.dumps(report(stats, **phases), indent=2), "the --stats report")
