"""Looking after the installation: cache info/clear, bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from jaxdream.cli import options as o
from jaxdream.cli.app import cache_app, command, out_console, say


@command(cache_app, "info")
def cache_info() -> None:
    """Where the cache is, what it holds (one row per compiled program) and its size."""
    from jaxdream import commands
    from jaxdream.compiled.store import DISABLE_ENV

    store, entries, enabled, _ = commands.program_cache()
    table = Table(title=f"compiled programs in {store.folder}")
    for column in ("program", "model", "argument shapes", "MB"):
        table.add_column(column, justify="right" if column == "MB" else "left")
    for entry in entries:
        table.add_row(entry.name, entry.model, entry.shapes, f"{entry.bytes / 1e6:.1f}")
    out_console.print(table)
    state = "on" if enabled else f"off (${DISABLE_ENV} is set)"
    out_console.print(f"{len(entries)} program(s), {sum(e.bytes for e in entries) / 1e6:.1f} MB; cache {state}; "
                      f"limit {store.max_bytes / 1e9:.0f} GB (least recently used dropped first)", highlight=False)


@command(cache_app, "clear")
def cache_clear() -> None:
    """Remove the compiled programs from the cache (only the files it wrote; the next run compiles again)."""
    from jaxdream import commands

    store, _, _, freed = commands.program_cache(clear=True)
    say(f"cleared {store.folder} ({freed / 1e6:.1f} MB freed)")


@command()
def bench(
    device: Annotated[str, typer.Option(metavar="cpu|gpu|all", help="Where to run.")] = "cpu",
    cases: Annotated[str, typer.Option(metavar="CASE,...", help=(
        "Comma-separated, of: step, round, batch, lucid, eager, torch, pipeline, startup, mixed, tiles, video, "
        "first-image, render, quality (an hour: 20 classes x 4 methods x 3 classifiers), shards."))]
        = "step,round,batch,lucid,eager,torch",
    out: Annotated[Path, typer.Option(metavar="FILE", help="Results JSON; the .md table and .png chart go beside "
                                                           "it.")] = Path("benchmarks/out/results.json"),
    precision: o.Precision = "f32",
) -> None:
    """Throughput suite: compile and run times apart, GFLOP/s against the measured matmul rate, baselines. Runs the
    source tree's benchmarks/ folder (a source checkout, `pip install -e .`); an installed wheel has no suite."""
    from jaxdream import commands

    written = commands.bench(device, cases, out, precision, log=say)
    say(f"wrote {', '.join(map(str, written))}")
