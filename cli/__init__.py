"""The `jaxdream` command line: a thin Typer layer over the library (jaxdream.commands), split by family over one
options module (options.py): dreams.py (nightmare, deepdream, lucid, video), sets.py (batch, sweep), models.py
(classify, weights, models, plan, info), tools.py (cache, bench); app.py holds the Typer app and what commands share.

Darknet's single-dash options (`-rounds 4`) are accepted as well as `--rounds 4`, so Darknet command lines work
unchanged; the global options --debug and --no-cache are accepted anywhere on the line.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys

from rich.markup import escape

from jaxdream.cli import dreams, models, sets, tools  # noqa: F401  (each registers its commands on the app)
from jaxdream.cli.app import NoticeHandler, app, err_console, state
from jaxdream.errors import Interrupted, JaxdreamError

# Darknet spells options with one dash; these are rewritten to two before parsing.
DARKNET_OPTIONS = (
    "rounds", "iters", "range", "octaves", "rate", "thresh", "zoom", "rotate", "norm", "prefix", "reconstruct",
    "momentum", "lambda", "smooth", "seed", "out", "format", "stats", "quiet", "debug", "objective", "channel",
    "guide", "weights",
)
RAY_ADDRESS = re.compile(r"auto|ray://\S+|[\w.\-]+:\d+")
GLOBAL_FLAGS = ("--debug", "--no-cache")  # the app's own options, accepted anywhere: moved to the front


def _darknet_argv(argv: list[str]) -> list[str]:
    argv = [f"-{a}" if a.startswith("-") and not a.startswith("--") and a[1:] in DARKNET_OPTIONS else a for a in argv]
    given = [a for a in GLOBAL_FLAGS if a in argv]
    return [*given, *(a for a in argv if a not in GLOBAL_FLAGS)]


def _ray_argv(argv: list[str]) -> list[str]:
    """`--ray ADDRESS`: a Ray address right after --ray (auto, HOST:PORT, ray://...; not a file or folder here,
    which is an input) is read as --ray-address ADDRESS, so --ray also works bare."""
    out = list(argv)
    for i, arg in enumerate(argv[:-1]):
        following = argv[i + 1]
        if arg == "--ray" and RAY_ADDRESS.fullmatch(following) and not os.path.exists(following):
            out[i + 1 : i + 2] = ["--ray-address", following]
            return out
    return out


def _notices() -> None:
    log = logging.getLogger("jaxdream")
    if not any(isinstance(h, NoticeHandler) for h in log.handlers):
        log.addHandler(NoticeHandler(logging.WARNING))


def main() -> None:
    """Console entry point: Darknet-style options, one-line errors (tracebacks with --debug)."""
    argv = _ray_argv(_darknet_argv(sys.argv[1:]))
    state["debug"] = "--debug" in argv
    _notices()
    signal.signal(signal.SIGINT, _interrupt)
    from jaxdream.environment import check_environment, platform_problem

    try:
        check_environment()  # before anything starts JAX: XLA aborts the process on a bad XLA_FLAGS
        app(argv, prog_name="jaxdream")
    except Interrupted:
        err_console.print("interrupted: every file written is whole (batch and video go on from here with "
                          "--resume)", highlight=False, soft_wrap=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Every output is already whole or removed; finalising the interpreter while XLA's threads are mid-work can
        # crash it (a segfault instead of 130), so leave at once.
        os._exit(130)
    except (JaxdreamError, RuntimeError, AssertionError) as err:
        message = str(err) if isinstance(err, JaxdreamError) else _out_of_memory(err) or platform_problem(err)
        if state["debug"] or message is None:
            raise
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: flag it for the dream loop (which checks between compiled calls of about a second) and stop the
    Python code running now. Raised inside a garbage-collector callback the exception is lost, hence the flag."""
    from jaxdream.interrupts import request_stop

    request_stop()
    if getattr(getattr(frame, "f_code", None), "co_name", "") == "_xla_gc_callback":
        return  # raised there it would only be printed as ignored; the flag stops the loop at its next check
    raise Interrupted()


def _out_of_memory(err: RuntimeError) -> str | None:
    """One line of advice for XLA running out of (device) memory; None for any other error."""
    from jax.errors import JaxRuntimeError

    text = str(err)
    if not isinstance(err, JaxRuntimeError) or not ("RESOURCE_EXHAUSTED" in text or "Out of memory" in text
                                                     or "out of memory" in text):
        return None
    return (f"out of memory ({str(err).strip().splitlines()[0]}): use a smaller image (batch: --size), a smaller "
            "--batch-size, fewer --octaves or an earlier layer; a batch run goes on from here with --resume")


__all__ = ["_darknet_argv", "app", "main"]
