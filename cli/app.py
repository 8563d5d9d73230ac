"""The Typer application the command families register on, and what every command shares: the consoles, the
download bar, the global options (--version, --debug, --no-cache)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from typer.core import TyperArgument, TyperCommand, TyperGroup

from jaxdream.cli.feedback import Feedback

# No emoji codes: a message quoting ':x:' (an objective's neuron:L:C:X:Y) must print as written.
err_console = Console(stderr=True, emoji=False)
out_console = Console(emoji=False)
state = {"debug": False}


def _no_metavar(option: Any) -> Any:
    if option is not None and option.metavar is None:
        option.metavar = ""  # --help is a flag: no <bool>
    return option


class Group(TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        return _no_metavar(super().get_help_option(ctx))


class Command(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # an argument's metavar says what it is: no <str> beside it
            if isinstance(param, TyperArgument) and param.metavar:
                param.display_type_rich = lambda ctx: None

    def get_help_option(self, ctx: Any) -> Any:
        return _no_metavar(super().get_help_option(ctx))


app = typer.Typer(help="Faithful, compiled DeepDream: Darknet's nightmare and friends in JAX.", cls=Group,
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
weights_app = typer.Typer(help="Convert, inspect and fetch model weights.", no_args_is_help=True, cls=Group)
app.add_typer(weights_app, name="weights")
cache_app = typer.Typer(
    help="The compiled-program cache ($JAXDREAM_HOME/programs, default ~/.cache/jaxdream/programs): a second run "
         "of a command loads its programs instead of tracing and compiling them again.", no_args_is_help=True,
    cls=Group)
app.add_typer(cache_app, name="cache")


def command(target: typer.Typer = app, name: str | None = None) -> Any:
    """``@command()``: register a function as a command of ``target`` (help without <bool>)."""
    return target.command(name, cls=Command)


def _print_version(value: bool) -> None:
    if value:
        from jaxdream import __version__

        print(f"jaxdream {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, metavar="",
                                          help="Print jaxdream's version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", metavar="",
                                        help="Tracebacks instead of one-line errors (anywhere on the line).")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", metavar="", help="Keep compiled programs in memory only, "
                                           "as JAXDREAM_NO_CACHE=1 does (anywhere on the line).")] = False,
) -> None:
    """Faithful, compiled DeepDream."""
    state["debug"] = state["debug"] or debug
    if no_cache:
        from jaxdream.compiled.store import disable_cache

        disable_cache()


class NoticeHandler(logging.Handler):
    """The library's notices (e.g. a cache entry rebuilt) as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]note:[/yellow] {escape(record.getMessage())}", highlight=False, soft_wrap=True)


class DownloadBar:
    """A download progress bar that appears only if a download actually starts; a context manager."""

    def __init__(self, quiet: bool = False, feedback: Feedback | None = None):
        self.quiet, self.progress, self.task, self.own = quiet, None, None, True
        if feedback is not None and feedback.live and not feedback.quiet:
            self.progress, self.own = feedback.bar, False  # one live display at a time: share the command's

    def __call__(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("fetching weights"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), console=err_console)
            self.progress.start()
        if self.task is None:
            self.task = self.progress.add_task("fetching weights", total=total, rate="")
        self.progress.update(self.task, completed=done, total=total)

    def __enter__(self) -> DownloadBar:
        return self

    def __exit__(self, *_: object) -> None:
        if self.progress is not None and self.own:
            self.progress.stop()
        elif self.task is not None:
            self.progress.remove_task(self.task)


@contextmanager
def showing(quiet: bool = False) -> Iterator[tuple[Feedback, DownloadBar]]:
    """What a command shows while the library works: the progress of the work and of a first download."""
    with Feedback(err_console, quiet) as shown, DownloadBar(quiet, shown) as bar:
        yield shown, bar


def say(text: str) -> None:
    """One plain line on stderr."""
    err_console.print(text, highlight=False, soft_wrap=True)
