"""Many dreams in one run: batch (an image set) and sweep (a grid of settings)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from jaxdream.cli import options as o
from jaxdream.cli.app import command, say, showing
from jaxdream.errors import OptionError


@command()
def batch(
    mode: Annotated[str, typer.Argument(metavar="MODE", help=(
        "nightmare, lucid or deepdream; or merge (`jaxdream batch merge OUT`: one manifest from a sharded or "
        "claimed run's parts)."))],
    model: Annotated[str, typer.Argument(metavar="MODEL", help=(
        "A built-in name (tiny, vgg-conv, ...), a .cfg, a converted or Keras .h5, or an .onnx; for merge, the "
        "run's output folder."))],
    inputs: Annotated[list[str] | None, typer.Argument(metavar="INPUT...", help=(
        "Image files, folders (recursive), globs, or .txt lists."))] = None,
    out: Annotated[Path | None, typer.Option(metavar="FOLDER", help="Output folder (created if missing); holds the "
                                                                    "manifest.")] = None,
    weights: o.Weights = None, layer: o.Layer = None, rounds: o.Rounds = None, iters: o.Iters = None,
    range_: o.Range = None, octaves: o.Octaves = None, rate: o.Rate = None, thresh: o.Thresh = None,
    zoom: o.Zoom = None, rotate: o.Rotate = None, objective: o.Objective = None, channel: o.Channel = None,
    class_: o.Class = None, target_scale: o.TargetScale = None, octave_scale: o.OctaveScale = None,
    precision: o.Precision = None, tile: o.Tile = None, memory: o.Memory = None, seed: o.Seed = 0,
    batch_size: o.BatchSize = 4,
    size: Annotated[str | None, typer.Option(metavar="WxH", help="Resize every image to WxH (one bucket) instead of "
                                                                 "by size.")] = None,
    resume: o.Resume = False, format_: o.Format = "jpg",
    exact_sizes: o.ExactSizes = False,
    coordinator: Annotated[str | None, typer.Option(metavar="HOST:PORT", help="Multi-host: the coordinator.")] = None,
    num_processes: Annotated[int | None, typer.Option(metavar="N", help="Multi-host: number of processes.")] = None,
    process_id: Annotated[int | None, typer.Option(metavar="N", help="Multi-host: this process's index.")] = None,
    shard: Annotated[str | None, typer.Option(metavar="I/N|auto", help=(
        "Dream only shard I of N (from 0), no coordinator: batch k of the whole plan belongs to shard k % N; "
        "auto: a Slurm array task's (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT). Merge the parts with "
        "`jaxdream batch merge OUT`."))] = None,
    shards: Annotated[int | None, typer.Option(metavar="N", help=(
        "Shard count of a Kubernetes Indexed Job: this pod is shard JOB_COMPLETION_INDEX of N."))] = None,
    claim: Annotated[bool, typer.Option("--claim", metavar="", help=(
        "Take batches one at a time through lease files in the output folder until all are done (start as many "
        "workers as you like, anywhere the folder is shared); a dead worker's batch is taken again when its "
        "lease expires."))] = False,
    lease_seconds: Annotated[float | None, typer.Option(metavar="S", help=(
        "How long a --claim lease lasts without its worker's heartbeat (default 300)."))] = None,
    ray: Annotated[bool, typer.Option("--ray", metavar="[ADDRESS]", help=(
        "Dream on Ray Data actors (pip install \"jaxdream[ray]\"): a new local Ray instance, the cluster of "
        "RAY_ADDRESS, or the one at ADDRESS (auto, HOST:6379, ray://HOST:10001). Every worker must see the "
        "folders at the same paths; the manifests are merged at the end."))] = False,
    ray_address: Annotated[str | None, typer.Option(metavar="ADDRESS", help=(
        "The Ray cluster to join (the same as --ray ADDRESS)."))] = None,
    ray_actors: Annotated[int | None, typer.Option(metavar="N", help=(
        "Ray actors dreaming at once (default: one per GPU, else one per 4 CPUs of the cluster)."))] = None,
    preprocess: o.Preprocess = None, labels: o.Labels = None, quiet: o.Quiet = False,
) -> None:
    """Dream a whole image set: `jaxdream batch nightmare vgg-conv photos/ --weights vgg-conv.weights --layer 10
    --out dreams/`. Writes a manifest (JSON lines) as images finish; rerun with --resume after an interruption.
    Unreadable images are reported and the rest go on; the exit status is 1 if any failed. A mode's options left
    out take the mode's defaults. Past one machine: --shard I/N or --claim, then `jaxdream batch merge OUT`; or
    --ray on a Ray cluster."""
    from jaxdream import commands

    if mode == "merge":
        return _merge(Path(model), inputs, out)
    if not inputs or out is None:
        raise OptionError("batch needs INPUT... and --out FOLDER: `jaxdream batch nightmare MODEL photos/ --out "
                          "dreams/ --layer 10`")
    with showing(quiet) as (shown, bar):
        summary = commands.batch(
            mode, model, inputs, out, weights=weights, seed=seed, size=size, fmt=format_, batch_size=batch_size,
            resume=resume, coordinator=coordinator, num_processes=num_processes, process_id=process_id,
            shard=shard, shards=shards, claim=claim, lease_seconds=lease_seconds, ray=ray, ray_address=ray_address,
            ray_actors=ray_actors, preprocess=preprocess,
            labels=labels, download=bar, progress=shown.counter("dreaming images", "image"),
            layer=layer, rounds=rounds, iters=iters, layer_range=range_, octaves=octaves, rate=rate, thresh=thresh,
            zoom=zoom, rotate=rotate, objective=objective, channel=channel, classes=class_,
            target_scale=target_scale, octave_scale=octave_scale, precision=precision, tile=tile, memory=memory,
            exact_sizes=exact_sizes or None)
    _report(summary, out, quiet, claim)


def _report(summary: Any, out: Path, quiet: bool, claim: bool) -> None:
    """What a batch run did; exit 1 if an image failed."""
    run = summary.stats
    say(f"{summary.done} dreamed, {summary.skipped} already done, {len(summary.errors)} failed in "
        f"{summary.seconds:.1f}s -> {out}")
    if not quiet and summary.done:
        shared = f" ({summary.canvases} shared canvas(es))" if summary.canvases else ""
        say(f"  {summary.sizes} distinct size(s){shared}; {run.programs_compiled} program(s) compiled in "
            f"{run.compile_seconds:.1f}s, {run.programs_loaded} loaded from the cache in {run.load_seconds:.1f}s; "
            f"dreaming {run.run_seconds:.1f}s")
    if claim:
        say(f"  {summary.claimed} batch(es) claimed, {summary.taken_over} of them after an expired lease")
    for _source, message in summary.errors:
        say(f"  failed: {escape(message)}")
    if not summary.ok:
        raise typer.Exit(1)


def _merge(out: Path, inputs: list[str] | None, given_out: Path | None) -> None:
    """`batch merge OUT`: exit 1 while inputs are missing."""
    from jaxdream import commands

    if inputs or given_out is not None:
        raise OptionError("batch merge takes one folder: `jaxdream batch merge OUT`")
    merged = commands.batch_merge(out)
    say(f"{merged.done} done, {len(merged.failed)} failed, {len(merged.missing)} missing, {merged.duplicated} "
        f"done twice -> {merged.manifest}")
    for source in merged.missing[:10]:
        say(f"  missing: {escape(source)}")
    if len(merged.missing) > 10:
        say(f"  ... and {len(merged.missing) - 10} more: rerun their shards, or more --claim workers, with --resume")
    if not merged.complete:
        raise typer.Exit(1)


@command()
def sweep(
    model: o.ModelArg, image: o.ImageArg,
    layers: Annotated[str, typer.Option(metavar="LAYERS", help=(
        "Layers: a range 4:13 (end excluded), a list 4,7,10, or layer names (Keras, ONNX: "
        "fire5/concat_1,fire9/concat_1)."))],
    rates: Annotated[str, typer.Option(metavar="X,...", help="Comma-separated rates (one compiled program for "
                                                             "all).")] = "0.04",
    thresh: Annotated[str, typer.Option(metavar="X,...", help="Comma-separated thresholds (same program).")] = "1.0",
    octaves: Annotated[str, typer.Option(metavar="N,...", help="Comma-separated octave counts (one program "
                                                               "each).")] = "4",
    iters: o.Iters = 10, range_: o.Range = 1, objective: o.Objective = "darknet", weights: o.Weights = None,
    seed: o.Seed = 0, out: o.Out = None, format_: o.Format = "png", precision: o.Precision = None,
    tile: o.Tile = None, memory: o.Memory = None, preprocess: o.Preprocess = None, labels: o.Labels = None,
    quiet: o.Quiet = False,
) -> None:
    """Dream one image under a grid of settings: writes <image>_sweep.png (a labelled contact sheet; --format jpg
    for a JPEG) and <image>_sweep.h5 (every cell's image, options and objective per iteration)."""
    from jaxdream import commands

    start = time.perf_counter()
    with showing(quiet) as (_, bar):
        cells, written = commands.sweep(
            model, weights, image, layers, rates=rates, thresh=thresh, octaves=octaves, out=out, fmt=format_,
            preprocess=preprocess, labels=labels, download=bar, iters=iters, layer_range=range_, seed=seed,
            tile=tile, memory=memory, objective=objective, precision=precision)
    if not quiet:
        say(f"{cells} cells in {time.perf_counter() - start:.1f}s -> {', '.join(map(str, written))}")


@command()
def atlas(
    model: o.ModelArg,
    args: Annotated[list[str] | None, typer.Argument(metavar="[WEIGHTS] [LAYER]", help=(
        "The weights (or --weights), then the layer whose channels to render (an index or a name); leave the "
        "layer out with --classes."))] = None,
    out: Annotated[Path, typer.Option(metavar="FOLDER", help="Output folder (created if missing); holds the "
                                                             "manifest.")] = Path("atlas"),
    weights: o.Weights = None,
    channels: Annotated[str | None, typer.Option(metavar="A:B", help="Only these channels: a range A:B (B "
                                                                     "excluded) or a list A,B,C.")] = None,
    classes: Annotated[str | None, typer.Option(metavar="all|A:B", help="A classifier's classes instead of a "
                                                                        "layer's channels.")] = None,
    size: Annotated[str, typer.Option(metavar="WxH", help="Each unit's picture size (one number: a "
                                                          "square).")] = "96x96",
    steps: o.Steps = 64, param: o.Param = "fft", transforms: o.Transforms = "standard",
    batch_size: Annotated[int | None, typer.Option(metavar="N", help=(
        "Units rendered together (one compiled program); default 1 on a CPU (a batch gains nothing there), 16 on "
        "a GPU."))] = None,
    resume: o.Resume = False, seed: o.Seed = 0, precision: o.Precision = None, preprocess: o.Preprocess = None,
    labels: o.Labels = None, quiet: o.Quiet = False,
) -> None:
    """Render every channel of a layer (or every class), one PNG each and a labelled contact sheet:
    `jaxdream atlas tiny 5 --out atlas/`. One compiled program for the whole atlas; rerun with --resume after an
    interruption (the same bytes as an uninterrupted run)."""
    from jaxdream import commands

    args = args or []
    if len(args) > 2:
        raise typer.BadParameter("give at most the weights and the layer", param_hint="[WEIGHTS] [LAYER]")
    if classes is not None:  # no layer: an argument is the weights (a file), else it was meant as a layer
        if len(args) == 2 or (args and not Path(args[0]).exists()):
            raise OptionError(f"--classes renders a classifier's classes: give no LAYER (got {args[-1]!r}; weights "
                              "are a file)")
        weights_arg, layer = (args[0] if args else weights), None
    else:
        weights_arg, layer = (args[0] if len(args) == 2 else weights), (args[-1] if args else None)
    with showing(quiet) as (shown, bar):
        summary = commands.atlas(
            model, weights_arg, layer, out, channels=channels, classes=classes, size=size, batch_size=batch_size,
            resume=resume, preprocess=preprocess, labels=labels, download=bar,
            progress=shown.counter("rendering units", "unit"), steps=steps, param=param, transforms=transforms,
            seed=seed, precision=precision)
    say(f"{summary.done} rendered, {summary.skipped} already done in {summary.seconds:.1f}s -> {out}"
        + (f"; sheet {summary.sheet}" if summary.sheet else ""))
