"""The `jaxdream` command line: a thin Typer layer over the library.

Darknet's single-dash options (`-rounds 4`) are accepted as well as `--rounds 4`, so Darknet command lines work
unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from jaxdream.cli.feedback import Feedback
from jaxdream.errors import Interrupted, JaxdreamError

OUT_HELP = "Output folder, created if missing (default: the current folder)."
PREPROCESS_HELP = ("ONNX models: the values the network expects: caffe (BGR, 0-255, ImageNet mean subtracted), torch "
                   "(RGB, ImageNet mean/std), tf ([-1, 1]) or raw ([0, 1]).")
LABELS_HELP = "ONNX models: class names, one per line or 'index,name' lines."
TILE_HELP = ("Dream in tiles of N x N pixels (one compiled gradient program for every image size; the threshold "
             "is per tile). Default: untiled unless the image would not fit in memory.")
MEMORY_HELP = "Memory budget (e.g. 6G) past which the dream is tiled by itself; default: half the RAM, 80 % of a GPU."

app = typer.Typer(
    help="Faithful, compiled DeepDream: Darknet's nightmare and friends in JAX.\n\nAnywhere on a command line: "
         "--debug (tracebacks instead of one-line errors), --no-cache (keep compiled programs in memory only; "
         "or set JAXDREAM_NO_CACHE=1).",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
weights_app = typer.Typer(help="Convert, inspect and fetch model weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
cache_app = typer.Typer(
    help="The compiled-program cache ($JAXDREAM_HOME/programs, default ~/.cache/jaxdream/programs): a second run "
         "of a command loads its programs instead of tracing and compiling them again.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
err_console = Console(stderr=True)

# Darknet spells options with one dash; these are rewritten to two before parsing.
DARKNET_OPTIONS = (
    "rounds", "iters", "range", "octaves", "rate", "thresh", "zoom", "rotate", "norm", "prefix", "reconstruct",
    "momentum", "lambda", "smooth", "seed", "out", "format", "stats", "quiet", "debug", "objective", "channel",
    "guide",
)


def _print_version(value: bool) -> None:
    if value:
        from jaxdream import __version__

        print(f"jaxdream {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print jaxdream's version and exit.")] = False,
) -> None:
    """Faithful, compiled DeepDream."""


def _darknet_argv(argv: list[str]) -> list[str]:
    return [f"-{a}" if a.startswith("-") and not a.startswith("--") and a[1:] in DARKNET_OPTIONS else a for a in argv]


class _NoticeHandler(logging.Handler):
    """The library's notices (e.g. a cache entry rebuilt) as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]note:[/yellow] {escape(record.getMessage())}", highlight=False, soft_wrap=True)


def _notices() -> None:
    log = logging.getLogger("jaxdream")
    if not any(isinstance(h, _NoticeHandler) for h in log.handlers):
        log.addHandler(_NoticeHandler(logging.WARNING))


class _DownloadBar:
    """A download progress bar that appears only if a download actually starts."""

    def __init__(self, quiet: bool):
        self.quiet, self.progress, self.task = quiet, None, None

    def __call__(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("fetching weights"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), console=err_console)
            self.progress.start()
            self.task = self.progress.add_task("download", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _load(model: str, weights: str | None, quiet: bool, preprocess: str | None = None,
          labels: Path | None = None):
    from jaxdream.model import load_model

    if weights == "-":  # an .h5 or .onnx model that carries its own weights
        weights = None
    bar = _DownloadBar(quiet)
    try:
        return load_model(model, weights, progress=bar, preprocess=preprocess, labels=labels)
    finally:
        bar.close()


@app.command()
def nightmare(
    cfg: Annotated[str, typer.Argument(
        help="Darknet .cfg, built-in name (vgg-conv, jnet-conv, vgg-16), or a converted/Keras .h5 model.")],
    weights: Annotated[str, typer.Argument(
        help="Darknet .weights, converted .h5, a zoo name (fetched once), or - when CFG is an .h5 model.")],
    image: Annotated[Path, typer.Argument(help="Input image (JPEG, PNG, ...).")],
    layer: Annotated[str, typer.Argument(
        help="Layer whose activations to amplify: an index, or an ONNX node name (`jaxdream weights info`).")],
    rounds: Annotated[int, typer.Option(help="Rounds; one image is written after each.")] = 1,
    iters: Annotated[int, typer.Option(help="Iterations per round.")] = 10,
    range_: Annotated[int, typer.Option("--range", help="Each iteration picks a layer in LAYER +- range/2.")] = 1,
    octaves: Annotated[int, typer.Option(help="Each iteration works at a random scale 1/1.3333^k, k < octaves.")] = 4,
    rate: Annotated[float, typer.Option(help="Step size of the normalised update.")] = 0.04,
    thresh: Annotated[float, typer.Option(help="Only activations above mean + thresh*std count.")] = 1.0,
    zoom: Annotated[float, typer.Option(
        help="Between rounds, the centre (w*zoom x h*zoom) resized back, as Darknet: <1 zooms in, >1 out.")] = 1.0,
    rotate: Annotated[float, typer.Option(help="Rotation between rounds, in radians (as Darknet).")] = 0.0,
    norm: Annotated[int, typer.Option(help="1: normalise each update to zero mean, unit std (Darknet's default).")] = 1,
    objective: Annotated[str, typer.Option(
        help="darknet (thresholded L2), l2, channel, neuron (with --channel) or guide (with --guide).")] = "darknet",
    channel: Annotated[int, typer.Option(help="Channel for the channel/neuron objectives.")] = 0,
    guide: Annotated[Path | None, typer.Option(help="Guide image for the guide objective.")] = None,
    reconstruct: Annotated[bool, typer.Option(help="Feature reconstruction instead of dreaming.")] = False,
    momentum: Annotated[float, typer.Option(help="Reconstruction: momentum of the update.")] = 0.9,
    lambda_: Annotated[float, typer.Option("--lambda", help="Reconstruction: smoothing strength.")] = 0.01,
    smooth: Annotated[int, typer.Option(help="Reconstruction: smoothing radius in pixels.")] = 1,
    prefix: Annotated[Path | None, typer.Option(help="Darknet's output folder option (same as --out).")] = None,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
    format_: Annotated[str, typer.Option("--format", help="jpg (quality 80, as Darknet) or png.")] = "jpg",
    seed: Annotated[int, typer.Option(help="Random seed: the same command gives the same images.")] = 0,
    stats: Annotated[Path | None, typer.Option(help="Write timings and sizes as JSON here.")] = None,
    precision: Annotated[str | None, typer.Option(
        help="Compute mode: f32 (exact, the default; or $JAXDREAM_PRECISION), tf32 or bf16 (faster on GPUs).")] = None,
    tile: Annotated[int | None, typer.Option(help=TILE_HELP)] = None,
    memory: Annotated[str | None, typer.Option(help=MEMORY_HELP)] = None,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    animate: Annotated[Path | None, typer.Option(
        help="Write the rounds as one animation (.mp4, .gif or .webp), frame by frame as they finish, instead of "
             "one image per round: -rounds 60 -zoom 1.05 --animate zoom.mp4 is the infinite zoom.")] = None,
    fps: Annotated[float, typer.Option(help="Frames per second of --animate.")] = 12.0,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Darknet's `nightmare`: `jaxdream nightmare vgg-conv vgg-conv.weights scream.jpg 10 -range 3 -iters 20`.

    Writes <image>_<cfg>_<layer>_<round:06d>.<format> after every round, named as Darknet names them (or, with
    --animate FILE, one animation of all rounds).
    """
    start = time.perf_counter()
    import jax

    from jaxdream import dream, outputs
    from jaxdream.files import write_report
    from jaxdream.image import load_image, save_image

    phases = {"import_seconds": time.perf_counter() - start}
    inputs = [image, cfg, weights, guide, labels]
    if out is not None and prefix is not None and out != prefix:
        raise JaxdreamError(f"--out {out} and --prefix {prefix} both name the output folder; give one of them")
    if animate is not None:
        from jaxdream import video

        if out is not None or prefix is not None:
            raise JaxdreamError("--animate names its file (a path); leave out --out/--prefix")
        video.check_output(outputs.check_not_input(animate, inputs, "--animate"))
        frame_rate = video.check_fps(fps, animate)
    outputs.check_report_path(stats, [*inputs, animate])
    folder = outputs.output_folder(out or prefix)
    x = load_image(image)
    loaded = time.perf_counter()
    model = _load(cfg, weights, quiet, preprocess, labels)
    phases["model_load_seconds"] = time.perf_counter() - loaded
    names = outputs.output_names([image], folder, model.name, str(layer), outputs.round_endings(rounds),
                                 outputs.check_format(format_))[image]
    outputs.check_io({"IMAGE": image, "CFG": cfg, "WEIGHTS": weights, "--guide": guide, "--labels": labels},
                     {"--animate" if animate else "output": animate or names, "--stats": stats}, ["--stats"])
    run_stats = dream.RunStats()
    phases["write_seconds"] = 0.0
    with contextlib.ExitStack() as stack:
        shown = stack.enter_context(Feedback(err_console, quiet))
        encoders = []  # the animation's, opened on the first frame (a reconstruction's frames have the net's size)
        if animate is not None:
            names = [animate] * rounds

        def write(r: int, frames) -> None:
            written = time.perf_counter()
            if animate is None:
                save_image(names[r], frames[0])
            else:
                if not encoders:
                    height, width = frames[0].shape[:2]
                    encoders.append(stack.enter_context(video.Encoder(animate, width, height, frame_rate)))
                encoders[0].write(frames[0])
            phases["write_seconds"] += time.perf_counter() - written
            elapsed = time.perf_counter() - start
            shown.print(f"round {r + 1}/{rounds}: {iters} iterations, {elapsed:.1f}s elapsed -> "
                        f"{escape(str(names[r]))}")

        if reconstruct:
            dream.reconstruct(model, x, layer, rounds=rounds, iters=iters, rate=rate, momentum=momentum,
                              lam=lambda_, smooth=smooth, zoom=zoom, rotate=rotate, on_round=write, stats=run_stats,
                              keep_rounds=False)
        else:
            dream.nightmare(model, x, layer, rounds=rounds, iters=iters, layer_range=range_, octaves=octaves,
                            rate=rate, thresh=thresh, zoom=zoom, rotate=rotate, norm=bool(norm), seed=seed,
                            objective=objective, channel=channel, guide=load_image(guide) if guide else None,
                            on_round=write, stats=run_stats, tile=tile, memory=memory, precision=precision,
                            keep_rounds=False)
        for encoder in encoders:
            encoder.close()
    if stats:
        report = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
                  "jax_version": jax.__version__, "image_size": [int(x.shape[1]), int(x.shape[0])],
                  "machine": platform.machine(), **run_stats.as_dict(), **phases,
                  "command_seconds": time.perf_counter() - start}
        write_report(stats, json.dumps(report, indent=2), "the --stats report")


@app.command()
def video(
    model: Annotated[str, typer.Argument(help="Darknet .cfg, built-in name, converted/Keras .h5 or .onnx model.")],
    weights: Annotated[str, typer.Argument(help="Weights file, zoo name, or - when MODEL carries its weights.")],
    video_in: Annotated[Path, typer.Argument(metavar="VIDEO", help="The video to dream (anything ffmpeg reads).")],
    layer: Annotated[str, typer.Argument(help="Layer to amplify: an index or a layer name (`weights info`).")],
    more: Annotated[list[Path] | None, typer.Argument(
        metavar="[MORE]...", help="More videos of the same size: they dream side by side, one batch per frame.")]
        = None,
    out: Annotated[Path | None, typer.Option(
        help="The output .mp4 (.gif, .webp) for one video, or a folder for several (default: the current folder, "
             "<video>_<model>_<layer>_video.mp4).")] = None,
    iters: Annotated[int, typer.Option(help="Iterations per frame.")] = 10,
    range_: Annotated[int, typer.Option("--range", help="Each iteration picks a layer in LAYER +- range/2.")] = 1,
    octaves: Annotated[int, typer.Option(help="Each iteration works at a random scale 1/1.3333^k, k < octaves.")] = 4,
    rate: Annotated[float, typer.Option(help="Step size of the normalised update.")] = 0.04,
    thresh: Annotated[float, typer.Option(help="Only activations above mean + thresh*std count.")] = 1.0,
    norm: Annotated[int, typer.Option(help="1: normalise each update to zero mean, unit std.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed: every frame uses the same drawn schedule.")] = 0,
    blend: Annotated[float, typer.Option(
        help="Temporal coherence: each frame starts from this much of the previous dreamed frame (warped by the "
             "flow) and the rest of the new frame; 0 dreams every frame on its own.")] = 0.5,
    flow: Annotated[str, typer.Option(
        help="dis: follow the motion with OpenCV's DIS optical flow of the input frames (pixels it cannot follow "
             "start fresh); none: blend without warping.")] = "dis",
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted run from its last finished frame (the same bytes as an uninterrupted run).")]
        = False,
    precision: Annotated[str | None, typer.Option(help="Compute mode: f32 (default), tf32 or bf16.")] = None,
    tile: Annotated[int | None, typer.Option(help=TILE_HELP)] = None,
    memory: Annotated[str | None, typer.Option(help=MEMORY_HELP)] = None,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    stats: Annotated[Path | None, typer.Option(help="Write frames and the time spent per phase as JSON here.")]
        = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Dream a video frame by frame with temporal coherence, keeping its frame rate and sound:
    `jaxdream video tiny.cfg tiny.weights clip.mp4 9 --out dreamed.mp4`. After a Ctrl-C, the same command with
    --resume finishes it."""
    from jaxdream import outputs
    from jaxdream import video as video_lib
    from jaxdream.files import write_report

    inputs = [video_in, *(more or [])]
    if out is not None and out.suffix.lower() in video_lib.UNWRITTEN_CONTAINERS:
        raise JaxdreamError(f"--out {out}: jaxdream writes {', '.join(video_lib.ANIMATION_SUFFIXES)} videos; "
                            "choose one of those (or a folder)")
    if out is not None and out.suffix.lower() in video_lib.ANIMATION_SUFFIXES:
        if len(inputs) > 1:
            raise JaxdreamError(f"--out {out}: several videos need an output folder")
        targets = [video_lib.check_output(out, "--out")]
    else:
        folder = outputs.output_folder(out)
    loaded = _load(model, weights, quiet, preprocess, labels)
    if out is None or out.suffix.lower() not in video_lib.ANIMATION_SUFFIXES:
        named = outputs.output_names(inputs, folder, loaded.name, layer, ["video"], "mp4")
        targets = [named[path][0] for path in inputs]
    outputs.check_report_path(stats, [*inputs, *targets, model, weights, labels])
    outputs.check_io({"VIDEO": inputs, "MODEL": model, "WEIGHTS": weights, "--labels": labels},
                     {"output": targets, "--stats": stats}, ["--stats"],
                     {"frame store": [video_lib.FrameStore.folder_for(t) for t in targets]})
    with Feedback(err_console, quiet) as shown:
        run = video_lib.dream_videos(
            loaded, inputs, targets, layer, iters=iters, layer_range=range_, octaves=octaves, rate=rate,
            thresh=thresh, norm=bool(norm), seed=seed, blend=blend, flow=flow, precision=precision, tile=tile,
            memory=memory, resume=resume, progress=shown.counter("dreaming frames", "frame"))
    if stats:
        write_report(stats, json.dumps(run.as_dict(), indent=2), "the --stats report")
    if not quiet:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in run.as_dict()["share"].items())
        err_console.print(f"{run.frames} frames dreamed ({run.resumed_frames} resumed) -> "
                          f"{', '.join(map(str, targets))}; time: {shares}", highlight=False)


@app.command()
def deepdream(
    model: Annotated[str, typer.Argument(help="Darknet .cfg, built-in name, or a converted/Keras .h5 model.")],
    weights: Annotated[str, typer.Argument(help="Weights file, zoo name, or - when MODEL is an .h5 model.")],
    image: Annotated[Path, typer.Argument(help="Input image.")],
    layer: Annotated[str, typer.Argument(help="Layer to amplify: an index or an ONNX node name (`weights info`).")],
    octaves: Annotated[int, typer.Option(help="Octaves of the pyramid, smallest first.")] = 4,
    octave_scale: Annotated[float, typer.Option(help="Size ratio between octaves.")] = 1.4,
    iters: Annotated[int, typer.Option(help="Iterations per octave.")] = 10,
    rate: Annotated[float, typer.Option(help="Step size (gradient normalised by its mean |g|).")] = 0.01,
    objective: Annotated[str, typer.Option(help="l2, darknet, channel, neuron or guide.")] = "l2",
    channel: Annotated[int, typer.Option(help="Channel for the channel/neuron objectives.")] = 0,
    guide: Annotated[Path | None, typer.Option(help="Guide image for the guide objective.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
    format_: Annotated[str, typer.Option("--format", help="jpg (quality 80) or png.")] = "jpg",
    tile: Annotated[int | None, typer.Option(help=TILE_HELP)] = None,
    memory: Annotated[str | None, typer.Option(help=MEMORY_HELP)] = None,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Google-style DeepDream: octave pyramid with the detail carried between octaves.

    Writes <image>_<model>_<layer>_deepdream.<format>.
    """
    from jaxdream import dream, outputs
    from jaxdream.image import load_image, save_image

    folder = outputs.output_folder(out)
    x = load_image(image)
    loaded = _load(model, weights, quiet, preprocess, labels)
    name = outputs.output_names([image], folder, loaded.name, str(layer), ["deepdream"],
                                outputs.check_format(format_))[image][0]
    outputs.check_io({"IMAGE": image, "MODEL": model, "WEIGHTS": weights, "--guide": guide, "--labels": labels},
                     {"output": name})
    with Feedback(err_console, quiet):
        frames = dream.deepdream(loaded, x, layer, octaves=octaves, octave_scale=octave_scale, iters=iters,
                                 rate=rate, objective=objective, channel=channel,
                                 guide=load_image(guide) if guide else None, seed=seed, tile=tile, memory=memory)
    save_image(name, frames[0, 0])
    if not quiet:
        err_console.print(f"-> {name}")


@app.command()
def batch(
    mode: Annotated[str, typer.Argument(help="nightmare, lucid or deepdream.")],
    model: Annotated[str, typer.Argument(help="Darknet .cfg, built-in name, or a converted/Keras .h5 model.")],
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursive), globs, or .txt lists.")],
    out: Annotated[Path, typer.Option(help="Output folder (created if missing); holds the manifest.")],
    weights: Annotated[str | None, typer.Option(help="Weights for a cfg or built-in name.")] = None,
    layer: Annotated[str | None, typer.Option(help="nightmare/deepdream: the layer (an index or ONNX node name).")]
        = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds (an image per round).")] = None,
    iters: Annotated[int | None, typer.Option(help="Iterations per round / octave.")] = None,
    range_: Annotated[int | None, typer.Option("--range", help="nightmare: layer range.")] = None,
    octaves: Annotated[int | None, typer.Option(help="Octaves.")] = None,
    rate: Annotated[float | None, typer.Option(help="Step size.")] = None,
    thresh: Annotated[float | None, typer.Option(help="nightmare: threshold in std.")] = None,
    zoom: Annotated[float | None, typer.Option(help="Between rounds: <1 zooms in, >1 out (Darknet's -zoom).")] = None,
    rotate: Annotated[float | None, typer.Option(help="Rotation between rounds (radians).")] = None,
    objective: Annotated[str | None, typer.Option(help="nightmare/deepdream objective.")] = None,
    channel: Annotated[int | None, typer.Option(help="Channel for channel/neuron objectives.")] = None,
    class_: Annotated[str | None, typer.Option("--class", help="lucid: class name, index or weighted mix.")] = None,
    target_scale: Annotated[float | None, typer.Option(help="lucid: BCE target of the chosen classes.")] = None,
    octave_scale: Annotated[float | None, typer.Option(help="deepdream: size ratio between octaves.")] = None,
    tile: Annotated[int | None, typer.Option(help="nightmare/deepdream: " + TILE_HELP)] = None,
    memory: Annotated[str | None, typer.Option(help="nightmare/deepdream: " + MEMORY_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Random seed (the same for every image).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per vmapped batch (a multiple of the devices).")] = 4,
    size: Annotated[str | None, typer.Option(help="Resize every image to WxH (one bucket) instead of by size.")] = None,
    resume: Annotated[bool, typer.Option(help="Skip inputs the manifest lists as done with the same options.")] = False,
    format_: Annotated[str, typer.Option("--format", help="jpg (quality 80) or png.")] = "jpg",
    coordinator: Annotated[str | None, typer.Option(help="Multi-host: coordinator HOST:PORT.")] = None,
    num_processes: Annotated[int | None, typer.Option(help="Multi-host: number of processes.")] = None,
    process_id: Annotated[int | None, typer.Option(help="Multi-host: this process's index.")] = None,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Dream a whole image set: `jaxdream batch nightmare vgg-conv photos/ --weights vgg-conv.weights --layer 10
    --out dreams/`. Writes a manifest (JSON lines) as images finish; rerun with --resume after an interruption.
    Unreadable images are reported and the rest go on; the exit status is 1 if any failed."""
    from jaxdream import batch as batch_lib

    if layer is not None and layer.strip().lstrip("-").isdigit():
        layer = int(layer)  # an index; anything else is an ONNX node name
    given = {"layer": layer, "rounds": rounds, "iters": iters, "layer_range": range_, "octaves": octaves,
             "rate": rate, "thresh": thresh, "zoom": zoom, "rotate": rotate, "objective": objective,
             "channel": channel, "classes": class_, "target_scale": target_scale, "octave_scale": octave_scale,
             "tile": tile, "memory": memory}
    options = {k: v for k, v in given.items() if v is not None}
    batch_lib.make_job(mode, "check", options, seed, size, format_)  # refuse bad options before any work
    process = batch_lib.join_processes(coordinator, num_processes, process_id)
    files = batch_lib.discover(inputs, out)
    loaded = _load(model, weights, quiet, preprocess, labels)
    job = batch_lib.make_job(mode, loaded.name, options, seed, size, format_)
    with Feedback(err_console, quiet) as shown:
        summary = batch_lib.run_batch(loaded, job, files, out, batch_size, process, resume,
                                      shown.counter("dreaming images", "image"),
                                      reads={"MODEL": model, "--weights": weights, "--labels": labels})
    if process[1] > 1 and process[0] == 0:
        batch_lib.merge_manifests(out, process[1])
    run = summary.stats
    err_console.print(f"{summary.done} dreamed, {summary.skipped} already done, {len(summary.errors)} failed "
                      f"in {summary.seconds:.1f}s -> {out}", highlight=False)
    if not quiet and summary.done:
        err_console.print(f"  {summary.sizes} distinct size(s); {run.programs_compiled} program(s) compiled in "
                          f"{run.compile_seconds:.1f}s, {run.programs_loaded} loaded from the cache in "
                          f"{run.load_seconds:.1f}s; dreaming {run.run_seconds:.1f}s", highlight=False)
    for _source, message in summary.errors:
        err_console.print(f"  failed: {escape(message)}", highlight=False)
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def sweep(
    model: Annotated[str, typer.Argument(help="Darknet .cfg, built-in name, or a converted/Keras .h5 model.")],
    image: Annotated[Path, typer.Argument(help="The image to dream under every setting.")],
    layers: Annotated[str, typer.Option(help="Layers: a range 4:13 (end excluded), a list 4,7,10, or layer names "
                                              "(Keras, ONNX: fire5/concat_1,fire9/concat_1).")],
    rates: Annotated[str, typer.Option(help="Comma-separated rates (one compiled program for all).")] = "0.04",
    thresh: Annotated[str, typer.Option(help="Comma-separated thresholds (same program).")] = "1.0",
    octaves: Annotated[str, typer.Option(help="Comma-separated octave counts (one program each).")] = "4",
    iters: Annotated[int, typer.Option(help="Iterations per cell.")] = 10,
    range_: Annotated[int, typer.Option("--range", help="Layer range per iteration.")] = 1,
    weights: Annotated[str | None, typer.Option(help="Weights for a cfg or built-in name.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed, the same for every cell.")] = 0,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
    tile: Annotated[int | None, typer.Option(help=TILE_HELP)] = None,
    memory: Annotated[str | None, typer.Option(help=MEMORY_HELP)] = None,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Dream one image under a grid of settings: writes <image>_sweep.png (a labelled contact sheet) and
    <image>_sweep.h5 (every cell's image, options and objective per iteration)."""
    from jaxdream import outputs
    from jaxdream import sweep as sweep_lib
    from jaxdream.image import load_image

    folder = outputs.output_folder(out)
    x = load_image(image)
    rate_list, thresh_list = sweep_lib.parse_floats(rates, "rates"), sweep_lib.parse_floats(thresh, "thresh")
    octave_list = sweep_lib.parse_ints(octaves, "octaves")
    loaded = _load(model, weights, quiet, preprocess, labels)
    layer_list = sweep_lib.parse_layers(layers, loaded)
    stem = outputs.file_stem(image)
    sheet, results = folder / f"{stem}_sweep.png", folder / f"{stem}_sweep.h5"
    outputs.check_io({"IMAGE": image, "MODEL": model, "--weights": weights, "--labels": labels},
                     {"output": [sheet, results]})
    start = time.perf_counter()
    with Feedback(err_console, quiet):
        cells = sweep_lib.sweep(loaded, x, layer_list, rate_list, thresh_list, octave_list, iters, range_, seed,
                                tile=tile, memory=memory)
    sweep_lib.contact_sheet(cells, sheet)
    sweep_lib.write_results(cells, results, str(image), seed)
    if not quiet:
        err_console.print(f"{len(cells)} cells in {time.perf_counter() - start:.1f}s -> {sheet}, {results}")


@app.command()
def classify(
    model: Annotated[str, typer.Argument(help="Built-in name, classifier .cfg, or converted .h5.")],
    images: Annotated[list[Path], typer.Argument(help="One or more images.")],
    weights: Annotated[str | None, typer.Option(help="Weights for a cfg or built-in name.")] = None,
    top: Annotated[int, typer.Option(help="How many classes to show.")] = 5,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
) -> None:
    """Top classes of each image with the model's own preprocessing (Darknet: letterbox, gray fill)."""
    from jaxdream.dream.lucid_mode import top_classes
    from jaxdream.image import load_image

    loaded = _load(model, weights, json_, preprocess, labels)
    with Feedback(err_console, json_):
        results = [{"image": str(path), "top": top_classes(loaded, load_image(path)[None], top)[0]} for path in images]
    if json_:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        Console().print(result["image"], highlight=False)
        for row in result["top"]:
            Console().print(f"  {100 * row['prob']:6.2f}%  {row['name']} ({row['index']})", highlight=False)


@app.command()
def lucid(
    model: Annotated[str, typer.Argument(help="Built-in classifier name, classifier .cfg, or converted .h5.")],
    images: Annotated[list[Path], typer.Argument(help="One or more images.")],
    class_: Annotated[str, typer.Option("--class", help="'ostrich', '9', or 'ostrich:0.7,pelican:0.3'.")],
    weights: Annotated[str | None, typer.Option(help="Weights for a cfg or built-in name.")] = None,
    iters: Annotated[int, typer.Option(help="Iterations per round.")] = 40,
    rate: Annotated[float, typer.Option(help="Step size of the normalised update.")] = 0.02,
    target_scale: Annotated[float, typer.Option(
        help="BCE-with-logits target of the chosen classes (0 for the rest), split by their weights.")] = 100.0,
    octaves: Annotated[int, typer.Option(help="Each iteration works at a random scale 1/1.3333^k, k < octaves.")] = 1,
    jitter: Annotated[bool, typer.Option(help="Random shift and flip per iteration (a mix: the first half only).")]
        = True,
    rounds: Annotated[int, typer.Option(help="Rounds; one image is written after each.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
    format_: Annotated[str, typer.Option("--format", help="jpg (quality 80) or png.")] = "jpg",
    stats: Annotated[Path | None, typer.Option(help="Write timings as JSON here.")] = None,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Dream images toward ImageNet classes: `jaxdream lucid vgg-16 dog.jpg --class ostrich`.

    A weighted mix ('ostrich:0.5,pelican:0.5') ascends the log-likelihood of its shares under the softmax.
    Its step anneals to 0 and the second half of the round is unjittered, so the image settles on the mix.

    Writes <image>_<model>_<class>_<round:06d>.<format> for every image and round.
    """
    from jaxdream import dream, outputs
    from jaxdream.dream import lucid_mode
    from jaxdream.files import write_report
    from jaxdream.image import load_image, save_image

    outputs.check_report_path(stats, [*images, model, weights, labels])
    folder = outputs.output_folder(out)
    loaded = _load(model, weights, quiet, preprocess, labels)
    lucid_mode.parse_classes(class_, loaded.class_names())  # fail on a bad class before any work
    names = outputs.output_names(images, folder, loaded.name, lucid_mode.class_tag(class_),
                                 outputs.round_endings(rounds), outputs.check_format(format_))
    outputs.check_io({"IMAGE": images, "MODEL": model, "--weights": weights, "--labels": labels},
                     {"output": list(names.values()), "--stats": stats}, ["--stats"])
    run_stats = dream.RunStats()
    start = time.perf_counter()
    with Feedback(err_console, quiet) as shown:
        for path in images:

            def write(r: int, frames, path: Path = path) -> None:
                save_image(names[path][r], frames[0])
                shown.print(f"{escape(path.name)} round {r + 1}/{rounds}: {time.perf_counter() - start:.1f}s -> "
                            f"{escape(str(names[path][r]))}")

            result = lucid_mode.lucid(loaded, load_image(path), class_, iters=iters, rate=rate,
                                      target_scale=target_scale, octaves=octaves, jitter=jitter, rounds=rounds,
                                      seed=seed, on_round=write, stats=run_stats, keep_rounds=False)
            verdict = ", ".join(f"{row['name']} {100 * row['prob']:.1f} %"
                                for row in lucid_mode.top_classes(loaded, result[-1], 3)[0])
            shown.print(f"  {loaded.name} now sees: {escape(verdict)}")
    if stats:
        write_report(stats, json.dumps(run_stats.as_dict(), indent=2), "the --stats report")


@weights_app.command("convert")
def weights_convert(
    model: Annotated[str, typer.Argument(help="Darknet .cfg or built-in name; a full Keras .h5; or vgg-16/vgg-19.")],
    weights: Annotated[Path | None, typer.Argument(
        help="Darknet .weights or Keras weights .h5 (if needed; - or nothing for a model that carries them).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="The .h5 file to write.")] = Path("model.h5"),
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
) -> None:
    """Convert a model into one jaxdream .h5 (architecture, parameters, the source file's sha256)."""
    from jaxdream import converted, files, outputs
    from jaxdream.model import load_model

    weights = None if weights is not None and str(weights) == "-" else weights  # a model that carries its weights
    outputs.check_io({"MODEL": model, "WEIGHTS": weights, "--labels": labels}, {"-o": output})
    loaded = load_model(model, weights, preprocess=preprocess, labels=labels)
    converted.write_converted(output, loaded.to_converted(files.sha256_of(weights or model)))
    err_console.print(f"wrote {output}")


@weights_app.command("info")
def weights_info(
    model: Annotated[str, typer.Argument(help="A .h5 (converted or Keras), an .onnx, a .cfg, or a built-in name.")],
    height: Annotated[int | None, typer.Option(help="Input height for the shapes (default: the model's).")] = None,
    width: Annotated[int | None, typer.Option(help="Input width for the shapes (default: the model's).")] = None,
    preprocess: Annotated[str | None, typer.Option(help=PREPROCESS_HELP)] = None,
) -> None:
    """The layer table: index, type, output shape and parameters — pick a dream layer from it."""
    from jaxdream.model import describe_only

    described = describe_only(model, preprocess)
    rows = described.describe(height, width)
    default_h, default_w = described.input_size
    table = Table(title=f"{model} at {width or default_w}x{height or default_h}")
    for column in ("layer", "type", "output (h x w x c)", "params"):
        table.add_column(column, justify="right" if column != "type" else "left")
    for row in rows:
        h, w, c = row["output"]
        kind = f"{row['type']} {row['name']}" if "name" in row else row["type"]
        table.add_row(str(row["index"]), kind, f"{h} x {w} x {c}", f"{row['params']:,}")
    Console().print(table)
    Console().print(f"total parameters: {sum(r['params'] for r in rows):,}")
    Console().print(f"input: {described.input_note}", highlight=False)


@weights_app.command("fetch")
def weights_fetch(name: Annotated[str, typer.Argument(help="A zoo name: vgg-conv, jnet-conv, vgg-16.")]) -> None:
    """Download a zoo model's official weights into the cache ($JAXDREAM_HOME, default ~/.cache/jaxdream)."""
    from jaxdream.darknet import zoo

    entry = zoo.find(name)
    if entry is None:
        raise JaxdreamError(f"{name!r} is not in the zoo; known: {', '.join(zoo.names())}")
    bar = _DownloadBar(False)
    try:
        path = zoo.fetch(entry, bar)
    finally:
        bar.close()
    err_console.print(f"{entry.name}: {path}")


@app.command()
def bench(
    device: Annotated[str, typer.Option(help="cpu, gpu or all.")] = "cpu",
    cases: Annotated[str, typer.Option(help="Comma-separated, of: step, round, batch, lucid, eager, torch, pipeline, "
                                             "startup, mixed, tiles, video.")] =
        "step,round,batch,lucid,eager,torch",
    out: Annotated[Path, typer.Option(help="Results JSON; the .md table and .png chart go beside it.")] =
        Path("benchmarks/out/results.json"),
    precision: Annotated[str, typer.Option(help="Compute mode: f32 (exact, default), tf32 or bf16.")] = "f32",
) -> None:
    """Throughput suite: compile and run times apart, GFLOP/s against the measured matmul rate, baselines. Runs the
    source tree's benchmarks/ folder (a source checkout, `pip install -e .`); an installed wheel has no suite."""
    import importlib

    import jaxdream

    root = Path(jaxdream.__file__).resolve().parent.parent  # the repository root of an editable install
    if not ((root / "benchmarks" / "suite.py").is_file() and (root / "pyproject.toml").is_file()):
        raise JaxdreamError("the benchmark suite lives in jaxdream's source tree (benchmarks/): run `jaxdream bench` "
                            "from a source checkout installed with pip install -e .")
    if device not in ("cpu", "gpu", "all"):
        raise JaxdreamError(f"--device {device!r}: use cpu, gpu or all")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    suite = importlib.import_module("benchmarks.suite")
    shared = Path(os.environ.get("JAXDREAM_SHARED", "../shared"))
    suite.run(device, tuple(c.strip() for c in cases.split(",") if c.strip()), out,
              shared if shared.is_dir() else None, log=lambda line: err_console.print(line, highlight=False),
              precision=precision)
    err_console.print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


@app.command()
def plan(
    model: Annotated[str, typer.Argument(help="Darknet .cfg, built-in name, or a converted/Keras .h5 model.")],
    layer: Annotated[str, typer.Argument(help="The dream layer: an index or a layer name (`weights info`).")],
    size: Annotated[str, typer.Option(help="Image size WIDTHxHEIGHT.")],
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 1,
    tile: Annotated[int | None, typer.Option(help="Tile size to plan (default 256).")] = None,
    memory: Annotated[str | None, typer.Option(help=MEMORY_HELP)] = None,
) -> None:
    """What a dream of this size needs before a long run: the untiled program and tiles, each with the memory its
    compiled program plans (arguments, outputs, temporaries), against the budget. Needs no weights."""
    from jaxdream.batch import parse_size
    from jaxdream.dream import tiles
    from jaxdream.model import describe_only

    height, width = parse_size(size)
    described = describe_only(model)
    rows = tiles.plan(described, described.resolve_layer(layer), height, width, batch_size, tile, memory)
    budget = tiles.parse_memory(memory) or tiles.device_budget()
    table = Table(title=f"{model} layer {layer} at {width}x{height}, budget {budget / 2**30:.1f} GB")
    for column in ("how", "planned MB", "fits", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["how"], f"{row['bytes'] / 2**20:,.0f}", "yes" if row["fits"] else "no", row["note"])
    Console().print(table)


@cache_app.command("info")
def cache_info() -> None:
    """Where the cache is, what it holds (one row per compiled program) and its size."""
    from jaxdream.compiled.store import DISABLE_ENV, ProgramStore
    from jaxdream.files import home_dir

    store = ProgramStore(home_dir() / "programs")
    entries = store.entries()
    table = Table(title=f"compiled programs in {store.folder}")
    for column in ("program", "model", "argument shapes", "MB"):
        table.add_column(column, justify="right" if column == "MB" else "left")
    for entry in entries:
        table.add_row(entry.name, entry.model, entry.shapes, f"{entry.bytes / 1e6:.1f}")
    Console().print(table)
    state = "off ($" + DISABLE_ENV + " is set)" if os.environ.get(DISABLE_ENV, "") not in ("", "0") else "on"
    Console().print(f"{len(entries)} program(s), {sum(e.bytes for e in entries) / 1e6:.1f} MB; cache {state}; "
                    f"limit {store.max_bytes / 1e9:.0f} GB (least recently used dropped first)", highlight=False)


@cache_app.command("clear")
def cache_clear() -> None:
    """Remove the compiled programs from the cache (only the files it wrote; the next run compiles again)."""
    from jaxdream.compiled.store import ProgramStore
    from jaxdream.files import home_dir

    store = ProgramStore(home_dir() / "programs")
    freed = store.clear()
    err_console.print(f"cleared {store.folder} ({freed / 1e6:.1f} MB freed)", highlight=False)


@app.command()
def info() -> None:
    """What this installation runs on: versions, devices, compute modes, the cache folder, the bundled model."""
    import jax
    import jaxlib

    from jaxdream import __version__
    from jaxdream import weights as bundled
    from jaxdream.compiled.store import default_store
    from jaxdream.darknet import zoo
    from jaxdream.files import home_dir

    console = Console()
    devices = ", ".join(f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices())
    gpu = jax.default_backend() == "gpu"
    store = default_store()
    held = store.entries() if store is not None else []
    rows = [
        ("jaxdream", __version__), ("jax / jaxlib", f"{jax.__version__} / {jaxlib.__version__}"),
        ("devices", devices),
        ("compute modes", "f32 (exact, default), tf32 and bf16" + ("" if gpu else
                          " (faster only on GPUs; for CUDA: pip install -e \".[cuda]\")")),
        ("cache folder", f"{home_dir()} ({len(held)} compiled programs, "
                         f"{sum(e.bytes for e in held) / 1e6:.1f} MB" + ("" if store else "; program cache off") + ")"),
        ("bundled model", f"{bundled.BUNDLED_MODEL} (Tiny Darknet, ImageNet-1k): {zoo.cached_path(zoo.find('tiny'))}"),
        ("sample photo", str(bundled.SAMPLE_IMAGE)),
    ]
    for name, value in rows:
        console.print(f"[bold]{name:>14}[/bold]  {escape(value)}", highlight=False, soft_wrap=True)


@app.command()
def models() -> None:
    """List the built-in architectures and where their weights come from."""
    from jaxdream.darknet import zoo

    table = Table(title="built-in models")
    for column in ("name", "weights URL", "bytes", "cached"):
        table.add_column(column)
    for name in zoo.names():
        entry = zoo.find(name)
        assert entry is not None
        where = "bundled in the package" if entry.bundled else entry.url
        table.add_row(name, where, str(entry.file_sizes()[1]), "yes" if zoo.cached_path(entry).exists() else "no")
    Console().print(table)


def main() -> None:
    """Console entry point: Darknet-style options, one-line errors (tracebacks with --debug)."""
    argv = _darknet_argv(sys.argv[1:])
    debug = "--debug" in argv
    if "--no-cache" in argv:
        os.environ["JAXDREAM_NO_CACHE"] = "1"
    argv = [a for a in argv if a not in ("--debug", "--no-cache")]
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
        if debug or message is None:
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
