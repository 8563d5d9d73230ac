"""Timings of compiled programs, kept apart: compile time is never counted as run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
