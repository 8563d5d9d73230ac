"""One library call per command of the `jaxdream` command line: each checks what the run reads and writes before
any work, loads the model, runs the mode and writes the files, and returns what the command prints. The command
line only parses options, calls one of these and prints (DESIGN.md: cli/ is parsing and printing only).

Nothing here prints: lines reach the user through the callbacks the caller passes (``on_written``, ``progress``).
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxdream import outputs
from jaxdream.compiled.stats import RunStats, write_stats
from jaxdream.errors import JaxdreamError, OptionError
from jaxdream.image import load_image, save_image
from jaxdream.model import describe_only, load_model

Download = Callable[[int, int | None], None] | None
Written = Callable[[int, Path, float], None] | None  # (round, path, seconds since the command started)


def load(model: str, weights: str | Path | None = None, preprocess: str | None = None,
         labels: str | Path | None = None, download: Download = None) -> Any:
    """``load_model`` as every command calls it (``download(done, total)`` follows a first fetch)."""
    return load_model(model, weights, progress=download, preprocess=preprocess, labels=labels)


def nightmare(
    cfg: str, weights: str | None, image: Path, layer: str, *, rounds: int = 1, out: Path | None = None,
    prefix: Path | None = None, fmt: str = "jpg", animate: Path | None = None, fps: float = 12.0,
    stats: Path | None = None, guide: Path | None = None, preprocess: str | None = None, labels: Path | None = None,
    reconstruct: bool = False, momentum: float = 0.9, lam: float = 0.01, smooth: int = 1,
    download: Download = None, on_written: Written = None, started: float | None = None, **options: Any,
) -> list[Path]:
    """Darknet's ``nightmare`` command: an image per round named as Darknet names them (or, with ``animate``, one
    animation of all rounds); ``options`` go to ``dream.nightmare`` (or, with ``reconstruct``, the shared ones to
    ``dream.reconstruct``). Returns the files written."""
    from jaxdream import dream, video

    start = started if started is not None else time.perf_counter()
    phases = {"import_seconds": time.perf_counter() - start}
    inputs = [image, cfg, weights, guide, labels]
    if out is not None and prefix is not None and out != prefix:
        raise OptionError(f"--out {out} and --prefix {prefix} both name the output folder; give one of them")
    if animate is not None and (out is not None or prefix is not None):
        raise OptionError("--animate names its file (a path); leave out --out/--prefix")
    animation = video.Animation(outputs.check_not_input(animate, inputs, "--animate"), fps) if animate else None
    outputs.check_report_path(stats, [*inputs, animate])
    folder = outputs.output_folder(out or prefix)
    x = load_image(image)
    loaded = time.perf_counter()
    model = load(cfg, weights, preprocess, labels, download)
    phases["model_load_seconds"] = time.perf_counter() - loaded
    names = [animate] * rounds if animate else outputs.output_names(
        [image], folder, model.name, str(layer), outputs.round_endings(rounds), outputs.check_format(fmt))[image]
    outputs.check_io({"IMAGE": image, "CFG": cfg, "WEIGHTS": weights, "--guide": guide, "--labels": labels},
                     {"--animate" if animate else "output": animate or names, "--stats": stats}, ["--stats"])
    run_stats, phases["write_seconds"] = RunStats(), 0.0

    def write(r: int, frames: Any) -> None:
        written = time.perf_counter()
        animation.write(frames[0]) if animation else save_image(names[r], frames[0])
        phases["write_seconds"] += time.perf_counter() - written
        if on_written is not None:
            on_written(r, names[r], time.perf_counter() - start)

    with animation or _Nothing():
        if reconstruct:
            shared = {k: options[k] for k in ("iters", "rate", "zoom", "rotate") if k in options}
            dream.reconstruct(model, x, layer, rounds=rounds, momentum=momentum, lam=lam, smooth=smooth,
                              on_round=write, stats=run_stats, keep_rounds=False, **shared)
        else:
            dream.nightmare(model, x, layer, rounds=rounds, guide=load_image(guide) if guide else None,
                            on_round=write, stats=run_stats, keep_rounds=False, **options)
    write_stats(stats, run_stats, image_size=[int(x.shape[1]), int(x.shape[0])], **phases,
                command_seconds=time.perf_counter() - start)
    return list(dict.fromkeys(names))


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None


def deepdream(
    model: str, weights: str | None, image: Path, layer: str, *, out: Path | None = None, fmt: str = "jpg",
    stats: Path | None = None, guide: Path | None = None, preprocess: str | None = None, labels: Path | None = None,
    download: Download = None, **options: Any,
) -> Path:
    """Google's DeepDream of one image, written as ``<image>_<model>_<layer>_deepdream.<fmt>``; ``options`` go to
    ``dream.deepdream``. Returns the file written."""
    from jaxdream import dream

    start = time.perf_counter()
    outputs.check_report_path(stats, [image, model, weights, guide, labels])
    folder = outputs.output_folder(out)
    x = load_image(image)
    loaded = load(model, weights, preprocess, labels, download)
    name = outputs.output_names([image], folder, loaded.name, str(layer), ["deepdream"],
                                outputs.check_format(fmt))[image][0]
    outputs.check_io({"IMAGE": image, "MODEL": model, "WEIGHTS": weights, "--guide": guide, "--labels": labels},
                     {"output": name, "--stats": stats}, ["--stats"])
    run_stats = RunStats()
    frames = dream.deepdream(loaded, x, layer, guide=load_image(guide) if guide else None, stats=run_stats,
                             **options)
    save_image(name, frames[0, 0])
    write_stats(stats, run_stats, image_size=[int(x.shape[1]), int(x.shape[0])],
                command_seconds=time.perf_counter() - start)
    return name


@dataclass(frozen=True)
class LucidImage:
    image: Path
    written: list[Path]
    top: list[dict[str, Any]]  # the classes the model sees in the last round, highest first


def lucid(
    model: str, weights: str | None, images: Sequence[Path], classes: str, *, rounds: int = 1,
    out: Path | None = None, fmt: str = "jpg", stats: Path | None = None, preprocess: str | None = None,
    labels: Path | None = None, download: Download = None, on_written: Callable[[Path, int, Path, float], None]
    | None = None, **options: Any,
) -> tuple[str, list[LucidImage]]:
    """Dream each image toward ``classes``: ``<image>_<model>_class-<classes>_<round>.<fmt>`` per round;
    ``options`` go to ``dream.lucid``. Returns the model's name and, per image, its files and top classes."""
    from jaxdream.dream import lucid_mode

    outputs.check_report_path(stats, [*images, model, weights, labels])
    folder = outputs.output_folder(out)
    loaded = load(model, weights, preprocess, labels, download)
    lucid_mode.parse_classes(classes, loaded.class_names())  # a bad class fails before any name is planned
    names = outputs.output_names(list(images), folder, loaded.name, lucid_mode.output_tag(classes),
                                 outputs.round_endings(rounds), outputs.check_format(fmt))
    outputs.check_io({"IMAGE": list(images), "MODEL": model, "--weights": weights, "--labels": labels},
                     {"output": list(names.values()), "--stats": stats}, ["--stats"])
    run_stats, start = RunStats(), time.perf_counter()

    def write(i: int, r: int, frames: Any) -> None:
        save_image(names[images[i]][r], frames[0])
        if on_written is not None:
            on_written(images[i], r, names[images[i]][r], time.perf_counter() - start)

    seen = lucid_mode.lucid_each(loaded, [load_image(path) for path in images], classes, on_round=write,
                                 rounds=rounds, stats=run_stats, **options)
    write_stats(stats, run_stats)
    return loaded.name, [LucidImage(path, names[path], top) for path, top in zip(images, seen, strict=True)]


def video(
    model: str, weights: str | None, videos: Sequence[Path], layer: str, *, out: Path | None = None,
    stats: Path | None = None, preprocess: str | None = None, labels: Path | None = None, download: Download = None,
    progress: Callable[[int, int], None] | None = None, **options: Any,
) -> tuple[list[Path], dict[str, Any]]:
    """Dream videos frame by frame (``video.dream_videos(**options)``); returns the files and the run's counts."""
    from jaxdream import video as video_lib

    inputs = list(videos)
    video_lib.video_outputs(inputs, out, "", layer)  # a bad --out fails (and a folder is made) before the model loads
    loaded = load(model, weights, preprocess, labels, download)
    targets = video_lib.video_outputs(inputs, out, loaded.name, layer)
    outputs.check_report_path(stats, [*inputs, *targets, model, weights, labels])
    outputs.check_io({"VIDEO": inputs, "MODEL": model, "WEIGHTS": weights, "--labels": labels},
                     {"output": targets, "--stats": stats}, ["--stats"],
                     {"frame store": [video_lib.FrameStore.folder_for(t) for t in targets]})
    run = video_lib.dream_videos(loaded, inputs, targets, layer, progress=progress, **options)
    write_stats(stats, run.as_dict())
    return targets, run.as_dict()


def sweep(
    model: str, weights: str | None, image: Path, layers: str, *, rates: str = "0.04", thresh: str = "1.0",
    octaves: str = "4", out: Path | None = None, fmt: str = "png", preprocess: str | None = None,
    labels: Path | None = None, download: Download = None, **options: Any,
) -> tuple[int, list[Path]]:
    """One image under a grid of settings: ``<image>_sweep.<fmt>`` (the labelled sheet) and ``<image>_sweep.h5``
    (every cell); ``options`` go to ``sweep.sweep``. Returns the cell count and the files written."""
    from jaxdream import sweep as sweep_lib

    folder = outputs.output_folder(out)
    x = load_image(image)
    rate_list, thresh_list = sweep_lib.parse_floats(rates, "rates"), sweep_lib.parse_floats(thresh, "thresh")
    octave_list = sweep_lib.parse_ints(octaves, "octaves")
    loaded = load(model, weights, preprocess, labels, download)
    layer_list = sweep_lib.parse_layers(layers, loaded)
    stem = outputs.file_stem(image)
    sheet, results = folder / f"{stem}_sweep.{outputs.check_format(fmt)}", folder / f"{stem}_sweep.h5"
    outputs.check_io({"IMAGE": image, "MODEL": model, "--weights": weights, "--labels": labels},
                     {"output": [sheet, results]})
    cells = sweep_lib.sweep(loaded, x, layer_list, rate_list, thresh_list, octave_list, **options)
    sweep_lib.contact_sheet(cells, sheet)
    sweep_lib.write_results(cells, results, str(image), options.get("seed", 0))
    return len(cells), [sheet, results]


def batch(
    mode: str, model: str, inputs: list[str], out: Path, *, weights: str | None = None, seed: int = 0,
    size: str | None = None, fmt: str = "jpg", batch_size: int = 4, resume: bool = False,
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
    shard: str | None = None, shards: int | None = None, claim: bool = False, lease_seconds: float | None = None,
    ray: bool = False, ray_address: str | None = None, ray_actors: int | None = None,
    preprocess: str | None = None, labels: Path | None = None, download: Download = None,
    progress: Callable[[int, int], None] | None = None, **options: Any,
) -> Any:
    """A whole image set in one mode (``options``: the mode's, None for unset); returns the batch summary. The
    first of several ``jax.distributed`` processes merges their manifests at the end; shards (``shard`` 'I/N', or
    'auto' / ``shards``: a job array's index) and claim workers leave that to ``batch_merge``; ``ray`` (or a
    ``ray_address``) dreams on Ray Data actors (``jaxdream.ray``) and merges at the end."""
    from jaxdream import batch as batch_lib
    from jaxdream import shards as shards_lib

    options = {k: v for k, v in options.items() if v is not None}
    batch_lib.make_job(mode, "check", options, seed, size, fmt)  # refuse bad options before any work
    if shard is not None and shard != "auto" and shards is not None:
        raise OptionError("--shards N is a Kubernetes Indexed Job's count; with --shard I/N leave it out")
    part = shards_lib.shard_from_environment(shards) if shard == "auto" or (shard is None and shards) else \
        shards_lib.parse_shard(shard) if shard is not None else None
    if part is not None and claim:
        raise OptionError("give --shard I/N (a fixed share) or --claim (batches taken as workers free up), not both")
    if (part is not None or claim) and (coordinator or num_processes):
        raise OptionError("--shard and --claim need no coordinator: leave out --coordinator/--num-processes")
    if lease_seconds is not None and not claim:
        raise OptionError("--lease-seconds is how long a --claim lease lasts; it has no use without --claim")
    ray = ray or ray_address is not None
    if ray and (part is not None or claim or coordinator or num_processes):
        raise OptionError("--ray schedules the batches itself: leave out --shard, --claim and --coordinator")
    if ray_actors is not None and not ray:
        raise OptionError("--ray-actors is the number of Ray actors; it has no use without --ray")
    process = batch_lib.join_processes(coordinator, num_processes, process_id)
    launch = batch_lib.launch_id() if process[1] > 1 else ""
    files = batch_lib.discover(inputs, out)
    loaded = load(model, weights, preprocess, labels, download)
    job = batch_lib.make_job(mode, loaded.name, options, seed, size, fmt)
    if ray:
        return _batch_on_ray(loaded, job, files, out, batch_size, resume, ray_address, ray_actors, progress,
                             {"MODEL": model, "--weights": weights, "--labels": labels}, preprocess)
    summary = batch_lib.run_batch(loaded, job, files, out, batch_size, process, resume, progress,
                                  reads={"MODEL": model, "--weights": weights, "--labels": labels}, shard=part,
                                  claim=claim, launch=launch,
                                  lease_seconds=shards_lib.DEFAULT_LEASE_SECONDS if lease_seconds is None
                                  else lease_seconds)
    if process[1] > 1 and process[0] == 0:
        batch_lib.merge_manifests(out, process[1], launch)
    return summary


def _batch_on_ray(loaded: Any, job: Any, files: list[Path], out: Path, batch_size: int, resume: bool,
                  address: str | None, actors: int | None, progress: Callable[[int, int], None] | None,
                  reads: dict[str, Any], preprocess: str | None) -> Any:
    """``batch --ray``: every name absolute, as the actors (other processes, other machines) must find them."""
    from jaxdream import ray

    def absolute(name: Any) -> str | None:
        return None if name is None else str(Path(name).absolute()) if Path(name).exists() else str(name)

    run = ray.RayRun(absolute(reads["MODEL"]) or "", absolute(reads["--weights"]), preprocess,
                     absolute(reads["--labels"]), job, tuple(p.absolute() for p in files), out.absolute(), batch_size,
                     resume)
    return ray.dream_on_ray(loaded, run, address=address, actors=actors, progress=progress, reads=reads)


def batch_merge(out: Path) -> Any:
    """One manifest.jsonl from the manifests of a run's shards and claim workers in ``out``, checked against its
    plan: returns what is done, failed, missing and duplicated (``shards.Merged``)."""
    from jaxdream import shards

    if not out.is_dir():
        raise OptionError(f"{out}: no such folder (the --out of the sharded or claimed run)")
    return shards.merge(out)


def classify(model: str, images: Sequence[Path], *, weights: str | None = None, top: int = 5,
             preprocess: str | None = None, labels: Path | None = None, download: Download = None
             ) -> list[dict[str, Any]]:
    """Per image, {"image", "top": [{"index", "name", "prob"}, ...]} with the model's own preprocessing."""
    from jaxdream.dream.lucid_mode import top_classes

    loaded = load(model, weights, preprocess, labels, download)
    return [{"image": str(path), "top": top_classes(loaded, load_image(path)[None], top)[0]} for path in images]


def evaluate(sources: Sequence[str | Path], models: str, *, output: Path | None = None,
             references: Path | None = None, layer: str | None = None, download: Download = None
             ) -> tuple[dict[str, Any], list[Path]]:
    """``jaxdream eval``: the pictures of ``sources`` (folders with a manifest, or files) under each model of
    ``models`` (comma-separated), written as JSON to ``output`` (default: ``eval.json`` in the one folder given,
    else here) and as Markdown beside it. Returns the results and the files written."""
    import json

    from jaxdream import evaluation
    from jaxdream.files import write_atomically

    specs = [spec.strip() for spec in models.split(",") if spec.strip()]
    if not specs:
        raise OptionError("--models: name at least one classifier (tiny, a converted .h5, a Keras .h5)")
    for spec in specs:
        if Path(spec).suffix.lower() in (".cfg", ".onnx"):
            raise OptionError(f"--models {spec}: a cfg needs its weights and an .onnx its preprocessing; make one file "
                              f"of it first: jaxdream weights convert {spec} [WEIGHTS] [--preprocess caffe] -o "
                              f"{Path(spec).stem}.h5")
    pictures = evaluation.find_pictures(sources)
    if output is None:
        only = Path(sources[0]) if len(sources) == 1 else None
        output = only / "eval.json" if only is not None and only.is_dir() else Path("eval.json")
    table = output.with_suffix(".md")
    reads = {"MODEL": specs, "PICTURE": [p.path for p in pictures], "--references": references,
             "manifest": sorted({p.path.parent / "manifest.jsonl" for p in pictures}),
             "photo": sorted({p.record["seed_image"] for p in pictures if isinstance(p.record.get("seed_image"), str)})}
    outputs.check_io(reads, {"--output": [output, table]})
    loaded = [load(spec, download=download) for spec in specs]
    result = evaluation.evaluate(pictures, loaded, references=references, layer=layer)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(output, (json.dumps(result, indent=1) + "\n").encode(), "the evaluation")
    write_atomically(table, evaluation.markdown(result).encode(), "the evaluation table")
    return result, [output, table]


def convert(model: str, weights: str | Path | None, output: Path, preprocess: str | None = None,
            labels: Path | None = None) -> Path:
    """Convert a model into one jaxdream .h5 (architecture, parameters, the source file's sha256)."""
    from jaxdream import converted, files

    weights = None if weights is not None and str(weights) == "-" else weights
    outputs.check_io({"MODEL": model, "WEIGHTS": weights, "--labels": labels}, {"-o": output})
    loaded = load_model(model, weights, preprocess=preprocess, labels=labels)
    converted.write_converted(output, loaded.to_converted(files.sha256_of(weights or model)))
    return output


@dataclass(frozen=True)
class LayerTable:
    title: str
    rows: list[dict[str, Any]]
    total_params: int
    input_note: str


def layer_table(model: str, height: int | None = None, width: int | None = None,
                preprocess: str | None = None) -> LayerTable:
    """The layer table of ``weights info``: index, type (and name), output shape and parameters."""
    described = describe_only(model, preprocess)
    rows = described.describe(height, width)
    default_h, default_w = described.input_size
    return LayerTable(f"{model} at {width or default_w}x{height or default_h}", rows,
                      sum(r["params"] for r in rows), described.input_note)


def fetch(name: str, download: Download = None) -> tuple[str, Path]:
    """Download a zoo model's official weights into the cache; (its name, the cached file)."""
    from jaxdream.darknet import zoo

    entry = zoo.find(name)
    if entry is None:
        raise OptionError(f"{name!r} is not in the zoo; known: {', '.join(zoo.names())}")
    return entry.name, zoo.fetch(entry, download)


def models() -> list[dict[str, Any]]:
    """The built-in architectures: name, where their weights come from, bytes, cached or not."""
    from jaxdream.darknet import zoo

    found = []
    for name in zoo.names():
        entry = zoo.find(name)
        assert entry is not None
        found.append({"name": name, "weights": "bundled in the package" if entry.bundled else entry.url,
                      "bytes": entry.file_sizes()[1], "cached": zoo.cached_path(entry).exists()})
    return found


def plan(model: str, layer: str, size: str, batch_size: int = 1, tile: int | None = None,
         memory: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """What a dream of ``size`` ('WxH') needs: (the memory budget in bytes, ``engine.plan``'s rows)."""
    from jaxdream.batch import parse_size
    from jaxdream.dream import engine, tiles

    height, width = parse_size(size)
    described = describe_only(model)
    rows = engine.plan(described, described.resolve_layer(layer), height, width, batch_size, tile, memory)
    return tiles.budget(memory), rows


def environment() -> list[tuple[str, str]]:
    """What this installation runs on, as (name, value) rows: versions, devices, compute modes, the cache folder,
    the bundled model and sample photo."""
    import jax
    import jaxlib

    from jaxdream import weights as bundled
    from jaxdream.compiled.store import default_store
    from jaxdream.darknet import zoo
    from jaxdream.environment import version as jaxdream_version
    from jaxdream.files import home_dir

    gpu = jax.default_backend() == "gpu"
    store = default_store()
    held = store.entries() if store is not None else []
    return [
        ("jaxdream", jaxdream_version()), ("jax / jaxlib", f"{jax.__version__} / {jaxlib.__version__}"),
        ("devices", ", ".join(f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices())),
        ("compute modes", "f32 (exact, default), tf32 and bf16" + ("" if gpu else
                          " (faster only on GPUs; for CUDA: pip install -e \".[cuda]\")")),
        ("cache folder", f"{home_dir()} ({len(held)} compiled programs, "
                         f"{sum(e.bytes for e in held) / 1e6:.1f} MB" + ("" if store else "; program cache off") + ")"),
        ("bundled model", f"{bundled.BUNDLED_MODEL} (Tiny Darknet, ImageNet-1k): {zoo.cached_path(zoo.find('tiny'))}"),
        ("sample photo", str(bundled.SAMPLE_IMAGE)),
    ]


def program_cache(clear: bool = False) -> tuple[Any, list[Any], bool, int]:
    """The compiled-program store: (the store, its entries, whether the cache is on, bytes freed by ``clear``)."""
    from jaxdream.compiled.store import cache_enabled, program_store

    store = program_store()
    freed = store.clear() if clear else 0
    return store, store.entries(), cache_enabled(), freed


def bench(device: str, cases: str, out: Path, precision: str = "f32",
          log: Callable[[str], None] = lambda line: None) -> list[Path]:
    """The benchmark suite of a source checkout (``benchmarks/``, beside the package of an editable install);
    returns the files written. An installed wheel has no suite."""
    root = Path(__file__).resolve().parent.parent
    if not ((root / "benchmarks" / "suite.py").is_file() and (root / "pyproject.toml").is_file()):
        raise JaxdreamError("the benchmark suite lives in jaxdream's source tree (benchmarks/): run `jaxdream bench` "
                            "from a source checkout installed with pip install -e .")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    suite = importlib.import_module("benchmarks.suite")
    return suite.run_command(device, cases, out, precision, log)


__all__ = ["accentuate", "atlas", "batch", "batch_merge", "bench", "classify", "convert", "deepdream", "environment",
           "evaluate", "fetch", "layer_table", "load", "lucid", "models", "nightmare", "plan", "program_cache",
           "read_spectrum", "render", "spectrum", "sweep", "video", "write_attribution"]


COLOUR_PHOTOS = 256  # photos enough for a 3x3 covariance
MAX_TAG = 80  # characters of an objective in output names


def render(model: str, weights: str | None, objective: str, *, out: Path | None = None, fmt: str = "png",
           size: str | None = None, start: Path | None = None, stats: Path | None = None,
           preprocess: str | None = None, labels: Path | None = None, download: Download = None,
           colours_from: Path | None = None, spectrum_file: Path | None = None, mask: bool = False,
           **options: Any) -> tuple[list[Path], Any]:
    """Render ``objective`` from noise (or from the image ``start``, at its size unless ``size`` says otherwise):
    ``<model>_<objective>_<item>.<fmt>`` per batch item; ``colours_from``: photos whose colour covariance replaces
    ImageNet's; ``options`` go to ``jaxdream.render``. Returns the files and, for a classifier, each image's top
    classes (else None)."""

    from jaxdream import records
    from jaxdream.batch import discover
    from jaxdream.dream.lucid_mode import top_classes
    from jaxdream.objectives import LOGIT_KINDS, parse_objective
    from jaxdream.visual.params import colour_from_photos
    from jaxdream.visual.render import render as render_images

    parsed = parse_objective(objective)  # a malformed objective fails before anything loads
    if colours_from is not None and not options.get("decorrelate", True):
        raise OptionError("--colours-from sets the decorrelation's colours; it has no use with --no-decorrelate")
    if options.get("decay", 1.0) != 1.0 and options.get("param", "fft") != "fft":
        raise OptionError("--decay scales the Fourier spectrum; it has no use with --param pixel")
    first = load_image(start) if start is not None else None
    if size is None:
        height, width = first.shape[:2] if first is not None else (224, 224)
    else:
        height, width = _render_size(size)
    outputs.check_report_path(stats, [model, weights, labels, start])
    folder = outputs.output_folder(out)
    loaded = load(model, weights, preprocess, labels, download)
    tag = _objective_tag(objective)
    batch = int(options.get("batch", 1))
    files = [folder / f"{loaded.name}_{tag}_{i:02d}.{outputs.check_format(fmt)}" for i in range(batch)]
    maps = [(path.with_name(f"{path.stem}_mask.png"), path.with_name(f"{path.stem}_rgba.png")) for path in files]
    outputs.check_io({"MODEL": model, "--weights": weights, "--labels": labels, "--from": start,
                      "--spectrum": spectrum_file},
                     {"output": files + [p for pair in maps for p in pair] * mask, "--stats": stats}, ["--stats"])
    if colours_from is not None:
        options["colour"] = colour_from_photos([load_image(p) for p in discover([str(colours_from)])[:COLOUR_PHOTOS]])
    if spectrum_file is not None:
        if options.get("param") != "maco":
            raise OptionError("--spectrum is MACO's magnitude spectrum: use it with --param maco")
        options["spectrum"] = read_spectrum(spectrum_file)
    run_stats = RunStats()
    images = render_images(loaded, parsed, size=(height, width), init=first, stats=run_stats, attribution=mask,
                           **options)
    if mask:
        images, attributions = images
        for (heat, rgba), image, attribution in zip(maps, images, attributions, strict=True):
            write_attribution(heat, rgba, image, attribution)
    run = records.new_run()
    for i, (path, image) in enumerate(zip(files, images, strict=True)):
        records.append(folder, loaded, "render", save_image(path, image), item=f"{tag}:{i}", run=run,
                       target_class=records.class_target(loaded, parsed, i), objective=objective)
    write_stats(stats, run_stats)
    classes = any(t.kind in LOGIT_KINDS for t in parsed.terms)
    return files, top_classes(loaded, images, 3) if classes else None


def atlas(model: str, weights: str | None, layer: str | None, out: Path, *, channels: str | None = None,
          classes: str | None = None, size: str = "96x96", batch_size: int | None = None, resume: bool = False,
          preprocess: str | None = None, labels: Path | None = None, download: Download = None,
          progress: Callable[[int, int], None] | None = None, **options: Any) -> Any:
    """Every channel of ``layer`` (``channels``: A:B or A,B,C) or, with ``classes`` ('all', A:B or a list), every
    class of a classifier, rendered into ``out`` with a contact sheet; ``options`` go to ``jaxdream.render``."""
    from jaxdream import atlas as atlas_lib

    if (layer is None) == (classes is None):
        raise OptionError("give a LAYER (its channels), or --classes for a classifier's classes, not both")
    if classes is not None and channels is not None:
        raise OptionError("--channels chooses a layer's channels; with --classes choose the classes there")
    height, width = _render_size(size)
    loaded = load(model, weights, preprocess, labels, download)
    if classes is not None:
        index = None
        units = atlas_lib.parse_units(None if classes == "all" else classes, loaded.num_classes, "classes")
    else:
        index = loaded.resolve_layer(layer)
        loaded.check_layer(index)
        count = loaded.layer_output_shapes(*loaded.input_size, index)[-1][2]
        units = atlas_lib.parse_units(channels, count, "channels")
    return atlas_lib.run_atlas(loaded, index, units, out, batch_size=batch_size, resume=resume, progress=progress,
                               reads={"MODEL": model, "--weights": weights, "--labels": labels},
                               size=(height, width), **options)


def spectrum(photos: list[str], output: Path, size: str = "224x224") -> tuple[Path, int]:
    """The mean magnitude spectrum of ``photos`` at ``size`` written to ``output`` (.npy); returns it and the
    number of photos."""
    import io

    import numpy as np

    from jaxdream.batch import discover
    from jaxdream.files import write_atomically
    from jaxdream.visual.params import spectrum_from_photos

    height, width = _render_size(size)
    files = discover(photos)
    outputs.check_io({"PHOTO": files}, {"--output": output})
    buffer = io.BytesIO()
    np.save(buffer, spectrum_from_photos([load_image(p) for p in files], height, width))
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(output, buffer.getvalue(), "the spectrum"), len(files)


def read_spectrum(path: Path) -> Any:
    """A spectrum written by ``spectrum`` (one clear error for anything else)."""
    import numpy as np

    try:
        magnitude = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise OptionError(f"{path}: not a spectrum .npy ({err}); make one with `jaxdream spectrum`") from None
    if magnitude.ndim != 3 or magnitude.shape[0] != 3:
        raise OptionError(f"{path}: a spectrum is (3, height, width // 2 + 1), this is {magnitude.shape}")
    return magnitude


def write_attribution(heat: Path, rgba: Path, image: Any, attribution: Any) -> None:
    """An attribution map (H, W) in [0, 1] as a heat map PNG (black, red, yellow, white) and the image as an RGBA
    PNG with the map as its alpha."""
    import numpy as np
    from PIL import Image

    from jaxdream.files import image_bytes, write_atomically
    from jaxdream.image import to_uint8

    a = np.clip(np.asarray(attribution, np.float32), 0.0, 1.0)[..., None]
    colours = np.concatenate([np.clip(3 * a, 0, 1), np.clip(3 * a - 1, 0, 1), np.clip(3 * a - 2, 0, 1)], axis=-1)
    write_atomically(heat, image_bytes(Image.fromarray(to_uint8(colours), "RGB"), "PNG"), "the attribution map")
    layers = np.concatenate([to_uint8(image), to_uint8(a)], axis=-1)
    write_atomically(rgba, image_bytes(Image.fromarray(layers, "RGBA"), "PNG"), "the attribution image")


def accentuate(model: str, weights: str | None, image: Path, objective: str, *, reg_layer: str, reg: str = "auto",
               out: Path | None = None, fmt: str = "png", preprocess: str | None = None, labels: Path | None = None,
               download: Download = None, **options: Any) -> Path:
    """``image`` accentuated toward ``objective`` (``jaxdream.accentuate``): ``<image>_<model>_accent-<objective>``
    in ``out``; returns the file."""

    from jaxdream import records
    from jaxdream.objectives import parse_objective
    from jaxdream.visual.accentuate import accentuate as accentuate_image

    parsed = parse_objective(objective)
    weight: float | str = reg
    if reg != "auto":
        try:
            weight = float(reg)
        except ValueError:
            raise OptionError(f"--reg {reg!r}: 'auto' or a weight such as 0.5") from None
    folder = outputs.output_folder(out)
    loaded = load(model, weights, preprocess, labels, download)
    tag = _objective_tag(objective)
    path = folder / f"{Path(image).stem}_{loaded.name}_accent-{tag}.{outputs.check_format(fmt)}"
    outputs.check_io({"IMAGE": image, "MODEL": model, "--weights": weights, "--labels": labels}, {"output": path})
    layer = loaded.resolve_layer(reg_layer)
    result = accentuate_image(loaded, load_image(image), parsed, reg_layer=layer, reg=weight, **options)
    records.append(folder, loaded, "accentuate", save_image(path, result[0]), item=f"{tag}:0", run=records.new_run(),
                   target_class=records.class_target(loaded, parsed, 0), objective=objective,
                   seed_image=str(Path(image).resolve()), reg_layer=layer)
    return path


def _objective_tag(objective: str) -> str:
    """An objective as output names carry it; a long one cut, with a digest so two never share a file."""
    import hashlib
    import re

    tag = re.sub(r"[^\w.-]+", "_", objective.strip()).strip("_") or "objective"
    if len(tag) > MAX_TAG:
        tag = f"{tag[:MAX_TAG - 9]}-{hashlib.sha256(objective.strip().encode()).hexdigest()[:8]}"
    return tag


def _render_size(size: str) -> tuple[int, int]:
    """--size of render, atlas and spectrum: WIDTHxHEIGHT, or one number for a square."""
    from jaxdream.batch import parse_size

    return parse_size(f"{size}x{size}" if size.isdigit() else size)
