"""The environment variables that decide how JAX starts, checked once before it starts (the command line's
``main`` calls :func:`check_environment`; nothing hot does): a mistake there is one line naming the variable and
the fix, not a traceback (``JAX_PLATFORMS``) or XLA killing the process (``XLA_FLAGS``)."""

from __future__ import annotations

import os
import subprocess
import sys

from jaxdream.errors import JaxdreamError


class EnvironmentSettingError(JaxdreamError):
    """An environment variable JAX or XLA cannot start with."""


# XLA aborts the whole process (LOG(FATAL), SIGABRT) on an unknown flag in XLA_FLAGS, so the check cannot run in
# this process. XLA exposes no list of its flags to Python, and a copied list would go stale with every jaxlib, so
# a child process parses the flags exactly as XLA will: creating a CPU client parses XLA_FLAGS (all of them, GPU
# ones included: they are one registry) and takes ~0.2 s, paid only when XLA_FLAGS is set, once per flags string.
_PROBE = "from jaxlib import xla_client; xla_client.make_cpu_client()"
_VERDICTS: dict[str, str | None] = {}


def xla_flags_problem(flags: str) -> str | None:
    """What XLA says about ``flags`` (e.g. 'Unknown flag in XLA_FLAGS: --xla_bogus=1'), or None when it starts.
    A probe that fails for another reason (no jaxlib, a timeout) says nothing: the real start reports that."""
    if flags not in _VERDICTS:
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, "XLA_FLAGS": flags},
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        problem = None
        if done is not None and done.returncode != 0:
            said = [line for line in done.stderr.splitlines() if "XLA_FLAGS" in line]
            if said:
                problem = said[-1].split("] ", 1)[-1].strip()
        _VERDICTS[flags] = problem
    return _VERDICTS[flags]


def check_environment() -> None:
    """Before JAX starts: refuse, in one line, an XLA_FLAGS that XLA would abort on."""
    flags = os.environ.get("XLA_FLAGS", "").strip()
    if flags and (problem := xla_flags_problem(flags)):
        raise EnvironmentSettingError(f"XLA_FLAGS={flags!r}: {problem}; remove or correct that flag (the names are "
                                      "in XLA's debug_options_flags.cc), or unset XLA_FLAGS")


def platform_problem(err: BaseException) -> str | None:
    """After ``err`` (an AssertionError or RuntimeError): one line when it came from JAX failing to start the
    backends JAX_PLATFORMS names, else None. Asked only once something failed: starting the backend up front would
    cost every command its start-up and must not happen before a multi-host run's ``jax.distributed``."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if not platforms or not isinstance(err, RuntimeError | AssertionError):
        return None
    import jax

    try:
        jax.devices()
    except (RuntimeError, AssertionError, ValueError) as again:
        said = (str(again).strip() or str(err).strip()).splitlines()
        return (f"JAX_PLATFORMS={platforms!r}: JAX cannot start that backend on this machine"
                + (f" ({said[0]})" if said else " (not installed, or no such device)")
                + "; unset JAX_PLATFORMS to use what is available (or set it to cpu), or install the backend "
                "(e.g. pip install 'jax[cuda12]')")
    return None


def version() -> str:
    """jaxdream's installed version ('0+unknown' from a tree that was never installed)."""
    from importlib import metadata

    try:
        return metadata.version("jaxdream")
    except metadata.PackageNotFoundError:
        return "0+unknown"
