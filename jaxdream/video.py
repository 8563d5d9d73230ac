"""Moving pictures: animations of nightmare rounds, and dreamed videos with temporal coherence.

Decoding and encoding go through imageio-ffmpeg (an ffmpeg binary inside a registry wheel: no system install, the
same encoder everywhere), optical flow through OpenCV's DIS (fast on a CPU: about 25 ms for a 640x360 pair). Every
output is streamed into a temp file beside its final name, checked, and renamed: a failure or Ctrl-C leaves no
partial file under the final name. MP4 output is deterministic (pinned encoder threads, no version strings or
copied metadata), so a resumed video has the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np

from jaxdream import checks, interrupts
from jaxdream.errors import JaxdreamError, OptionError
from jaxdream.files import sha256_of

ANIMATION_SUFFIXES = (".mp4", ".gif", ".webp")
UNWRITTEN_CONTAINERS = (".mov", ".mkv", ".avi", ".m4v", ".webm", ".wmv", ".flv", ".mpg", ".mpeg", ".ts")
DIS_MIN_SIDE = 12
GIF_MAX_FPS = 50  # GIF delays are in 1/100 s, and players treat delays under 2/100 s as 1/10 s
FLOWS = ("dis", "none")
STILL_CODECS = {"png", "mjpeg", "bmp", "tiff", "webp", "gif"}
MP4_COPYABLE_AUDIO = {"aac", "mp3"}
# x264 writes its thread count into the stream and ffmpeg its version: both pinned or dropped, so the same frames
# always give the same bytes (with the same imageio-ffmpeg build).
DETERMINISTIC = ["-threads", "2", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]


# ffmpeg runs as a child process started by fork + exec: the child runs no Python, so JAX's warning about forking a
# multithreaded process does not apply to it.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
# Its notices ("no frames have been written" when an aborted encoder closes, a rotated frame size) are about states
# this module handles and reports itself.
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)


class VideoError(JaxdreamError):
    """A video that cannot be read or written."""


def _ffmpeg() -> Any:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise OptionError("video needs imageio-ffmpeg and opencv: pip install 'jaxdream[video]'") from None
    return imageio_ffmpeg


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise OptionError("video needs imageio-ffmpeg and opencv: pip install 'jaxdream[video]'") from None
    cv2.setNumThreads(1)  # the dream has the cores; DIS on one thread is ~25 ms per 640x360 pair
    return cv2


def check_output(path: str | Path, what: str = "--animate") -> Path:
    """An animation or video path: a known suffix, in a folder that exists and is writable."""
    path = Path(path)
    if path.suffix.lower() not in ANIMATION_SUFFIXES:
        raise OptionError(f"{what} {path}: use a name ending in {', '.join(ANIMATION_SUFFIXES)}")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise OptionError(f"{what} {path}: the folder {path.parent} does not exist or is not writable")
    if path.is_dir():
        raise OptionError(f"{what} {path}: a folder has that name; choose another")
    return path


def check_fps(fps: float, path: str | Path | None = None) -> Fraction:
    if not (isinstance(fps, int | float | Fraction) and np.isfinite(float(fps)) and 0.1 <= float(fps) <= 240):
        raise OptionError(f"--fps {fps}: use a frame rate between 0.1 and 240")
    if path is not None and Path(path).suffix.lower() == ".gif" and float(fps) > GIF_MAX_FPS:
        raise OptionError(f"--fps {fps}: a GIF plays at most {GIF_MAX_FPS} frames/s; use .mp4 or .webp for more")
    return Fraction(fps).limit_denominator(1001)


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds: size, exact frame rate, frame count, and its audio codec (None without audio)."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int
    audio_codec: str | None


def _exact_fps(fps: float) -> Fraction:
    """ffmpeg prints rates with two decimals: 23.98 is NTSC's 24000/1001."""
    n = round(fps * 1.001)
    if abs(fps - round(fps)) > 1e-3 and abs(fps - n / 1.001) < 0.006:
        return Fraction(n * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def _open(path: Path) -> tuple[dict[str, Any], Iterator[bytes]]:
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    # passthrough: each decoded frame once (a variable-rate phone video would otherwise be padded or thinned to a
    # constant rate, and no longer match its frame count)
    reader = _ffmpeg().read_frames(str(path), output_params=["-fps_mode", "passthrough"])
    try:
        meta = next(reader)
    except (OSError, RuntimeError) as err:
        reader.close()
        text = str(err)
        if "does not contain any stream" in text:
            raise VideoError(f"{path}: has no video stream (an audio file, or a video with no frames)") from None
        reason = text.strip().splitlines()[-1] if text.strip() else type(err).__name__
        raise VideoError(f"{path}: not a video ffmpeg can read ({reason})") from None
    if meta.get("codec", "").rstrip(",") in STILL_CODECS and not meta.get("duration"):
        reader.close()
        raise VideoError(f"{path}: a still image, not a video (use nightmare for images)")
    return meta, reader


def probe(path: str | Path) -> VideoInfo:
    """The video's size, frame rate, exact frame count and audio codec; one clear error for anything else."""
    path = Path(path)
    meta, reader = _open(path)
    reader.close()
    try:
        frames, _ = _ffmpeg().count_frames_and_secs(str(path))
    except (OSError, RuntimeError) as err:
        raise VideoError(f"{path}: its frames cannot be counted ({str(err).strip().splitlines()[-1]})") from None
    if frames < 1:
        raise VideoError(f"{path}: the video has no frames")
    if min(int(v) for v in meta["size"]) < 1:
        raise VideoError(f"{path}: the video's frames are empty ({meta['size']})")
    width, height = (int(v) for v in meta["size"])
    return VideoInfo(path, width, height, _exact_fps(float(meta["fps"])), int(frames), meta.get("audio_codec"))


def read_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    """The frames as (H, W, 3) uint8 arrays, streamed (one in memory at a time)."""
    _, reader = _open(info.path)
    try:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(info.height, info.width, 3)
    finally:
        reader.close()


class Encoder:
    """Frames streamed into an .mp4, .gif or .webp: written to a temp file beside ``path`` (created exclusively, so
    no planted link is followed), checked and renamed by ``close``; ``abort`` (or leaving a ``with`` block on an
    error) removes it. ``audio``: the video whose sound track an .mp4 keeps."""

    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction | float,
                 audio: VideoInfo | None = None) -> None:
        self.path = check_output(path, "output")
        self.suffix = self.path.suffix.lower()
        self.size = (width, height)
        self.count = 0
        fps = Fraction(fps).limit_denominator(1001)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=f".partial{self.suffix}",
                                    dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        options: dict[str, Any] = {"macro_block_size": 1, "quality": None, "ffmpeg_log_level": "error",
                                   "input_params": ["-r", str(fps)]}
        if self.suffix == ".mp4":
            output = [*DETERMINISTIC, "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]  # 4:2:0 needs even sides
            options.update(codec="libx264", pix_fmt_out="yuv420p", quality=8)
            if audio is not None and audio.audio_codec is not None:
                copy = audio.audio_codec.split()[0].rstrip(",") in MP4_COPYABLE_AUDIO
                options.update(audio_path=str(audio.path), audio_codec="copy" if copy else "aac")
                output += [] if copy else ["-flags:a", "+bitexact"]
        elif self.suffix == ".gif":  # one palette per frame: streams without holding the clip in ffmpeg
            output = ["-filter_complex", "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1",
                      "-loop", "0", *DETERMINISTIC[2:]]
            options.update(codec="gif", pix_fmt_out="pal8")
        else:
            output = ["-loop", "0", "-quality", "90", "-lossless", "0", *DETERMINISTIC[2:]]
            options.update(codec="libwebp_anim", pix_fmt_out="yuv420p")
        try:
            self._writer = _ffmpeg().write_frames(str(self.tmp), self.size, fps=float(fps), output_params=output,
                                                  **options)
            self._writer.send(None)
        except (OSError, RuntimeError) as err:
            self.tmp.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: the encoder did not start ({err})") from None

    def write(self, frame: np.ndarray) -> None:
        """One (H, W, 3) frame: uint8, or float in [0, 1]."""
        if frame.dtype != np.uint8:
            from jaxdream.image import to_uint8

            frame = to_uint8(frame)
        if frame.shape != (self.size[1], self.size[0], 3):
            raise VideoError(f"{self.path}: a {frame.shape[1]}x{frame.shape[0]} frame in a "
                             f"{self.size[0]}x{self.size[1]} video; every frame must have one size")
        try:
            self._writer.send(np.ascontiguousarray(frame))
        except (OSError, RuntimeError) as err:
            raise VideoError(f"{self.path}: the encoder failed ({str(err).strip().splitlines()[-1]}); check the "
                             "folder has free space") from None
        self.count += 1

    def close(self) -> Path:
        """Finish the file, check it holds every frame, and move it to its final name."""
        try:
            self._writer.close()
            if self.count == 0:
                raise VideoError(f"{self.path}: no frames were written")
            if not self.tmp.is_file() or self.tmp.stat().st_size == 0:
                raise VideoError(f"{self.path}: the encoder wrote nothing; check the folder has free space")
            if self.suffix == ".mp4":  # ffmpeg's exit status is not reported: count what it wrote
                written, _ = _ffmpeg().count_frames_and_secs(str(self.tmp))
                if written != self.count:
                    raise VideoError(f"{self.path}: {self.count} frames sent, {written} written; check free space")
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        except (OSError, RuntimeError) as err:
            self.abort()
            raise VideoError(f"{self.path}: cannot finish the file ({err})") from None
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop the encoder and remove the temp file (the final name is never touched)."""
        with contextlib.suppress(Exception):
            self._writer.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abort()


class Animation:
    """Frames streamed into one animation as they finish (``nightmare --animate``): the encoder opens on the first
    frame, at that frame's size (a reconstruction's frames have the network's); leaving the ``with`` block
    finishes the file, or removes it after an error."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = check_output(path)
        self.fps = check_fps(fps, path)
        self.encoder: Encoder | None = None

    def write(self, frame: np.ndarray) -> None:
        if self.encoder is None:
            height, width = frame.shape[:2]
            self.encoder = Encoder(self.path, width, height, self.fps)
        self.encoder.write(frame)

    def __enter__(self) -> Animation:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if self.encoder is None:
            return
        if kind is None:
            self.encoder.close()
        else:
            self.encoder.abort()


def video_outputs(inputs: list[Path], out: str | Path | None, model: str, layer: int | str) -> list[Path]:
    """Where ``jaxdream video`` writes each input: ``out`` itself when it names an animation (one input only),
    else ``<video>_<model>_<layer>_video.mp4`` in the folder ``out`` (default: the current folder)."""
    from jaxdream import outputs

    out = Path(out) if out is not None else None
    if out is not None and out.suffix.lower() in UNWRITTEN_CONTAINERS:
        raise OptionError(f"--out {out}: jaxdream writes {', '.join(ANIMATION_SUFFIXES)} videos; choose one of "
                          "those (or a folder)")
    if out is not None and out.suffix.lower() in ANIMATION_SUFFIXES:
        if len(inputs) > 1:
            raise OptionError(f"--out {out}: several videos need an output folder")
        return [check_output(out, "--out")]
    named = outputs.output_names(inputs, outputs.output_folder(out), model, str(layer), ["video"], "mp4")
    return [named[path][0] for path in inputs]


def count_frames(path: str | Path) -> int:
    """Frames in a written .mp4, .gif or .webp (Pillow for the animations: ffmpeg cannot decode animated WebP)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return int(_ffmpeg().count_frames_and_secs(str(path))[0])
    from PIL import Image

    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))


class Coherence:
    """Each frame's starting image: the new frame blended with the previous dreamed frame, warped onto it by the
    optical flow of the input frames (``flow`` 'dis'; 'none' blends without warping); pixels the flow cannot follow
    (forward-backward disagreement, or coming from outside the frame) start from the new frame alone."""

    def __init__(self, flow: str = "dis", blend: float = 0.5) -> None:
        if flow not in FLOWS:
            raise OptionError(f"--flow {flow!r}: use one of {', '.join(FLOWS)}")
        if not (isinstance(blend, int | float) and 0.0 <= blend <= 1.0):
            raise OptionError(f"--blend {blend}: use a weight between 0 (independent frames) and 1")
        self.flow, self.blend = flow, float(blend)
        self._dis = None
        if flow == "dis" and blend > 0:
            cv2 = _cv2()
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def start(self, frame: np.ndarray, previous_frame: np.ndarray | None, previous_dream: np.ndarray | None
              ) -> np.ndarray:
        """float32 (H, W, 3) in [0, 1] from uint8 frames."""
        new = frame.astype(np.float32) / 255.0
        if previous_dream is None or self.blend == 0.0:
            return new
        if self._dis is None:
            carried, valid = previous_dream.astype(np.float32) / 255.0, np.ones(new.shape[:2], bool)
        else:
            carried, valid = self.warp(previous_dream, frame, previous_frame)
        mixed = self.blend * carried + (1.0 - self.blend) * new
        return np.where(valid[..., None], mixed, new).astype(np.float32)

    def warp(self, image: np.ndarray, frame: np.ndarray, previous_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``image`` (aligned with ``previous_frame``) moved onto ``frame`` as float32 in [0, 1], and where that
        move is trusted."""
        cv2 = _cv2()
        gray, previous_gray = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (frame, previous_frame))
        back = self._dis.calc(gray, previous_gray, None)  # from each new pixel to where it was
        ahead = self._dis.calc(previous_gray, gray, None)
        height, width = gray.shape
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        map_x, map_y = xs + back[..., 0], ys + back[..., 1]
        sample = lambda a: cv2.remap(a, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        moved = sample(image.astype(np.float32) / 255.0)
        ahead_there = sample(ahead)
        disagree = ((back + ahead_there) ** 2).sum(-1) > 0.01 * ((back**2).sum(-1) + (ahead_there**2).sum(-1)) + 0.5
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        return moved, inside & ~disagree


@dataclass
class VideoStats:
    """Where a video run's time went, and how much it did."""

    frames: int = 0
    resumed_frames: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("decode", "flow", "dream", "encode"),
                                                                              0.0))

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - began

    def as_dict(self) -> dict[str, Any]:
        total = sum(self.seconds.values())
        return {"frames": self.frames, "resumed_frames": self.resumed_frames,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
                "share": {k: round(v / total, 4) if total else 0.0 for k, v in self.seconds.items()}}


class FrameStore:
    """The finished frames of an unfinished video, as lossless PNGs in a hidden folder beside the output, with the
    run's key and each stored frame's sha256 (run.json, rewritten atomically after each frame): what ``--resume``
    continues from (and re-encodes, so the file is the same as an uninterrupted run's). A frame whose bytes are not
    the ones this run stored (repainted, swapped, half-copied) is dreamed again.
    """

    def __init__(self, output: Path, key: str, resume: bool) -> None:
        self.folder = self.folder_for(output)
        self.key = key
        self.hashes: dict[str, str] = {}
        self.key_file = key_file = self.folder / "run.json"
        if self.folder.is_symlink() or (self.folder.exists() and not self.folder.is_dir()):
            raise OptionError(f"{self.folder}: in the way of the resume folder; remove it")
        if resume and key_file.is_file():
            try:
                record = json.loads(key_file.read_text())
                stored = record.get("key")
                frames = record.get("frames", {})
                if isinstance(frames, dict):
                    self.hashes = {k: v for k, v in frames.items() if isinstance(k, str) and isinstance(v, str)}
            except (OSError, ValueError, AttributeError):
                stored = None
            if stored != key:
                raise OptionError(f"--resume: the unfinished run in {self.folder} was made with other inputs, model "
                                  "or options; run without --resume to start over")
        else:
            if resume:
                logging.getLogger("jaxdream").warning("--resume: no unfinished run of %s; starting from the first "
                                                      "frame", output)
            shutil.rmtree(self.folder, ignore_errors=True)
        for stale in output.parent.glob(f".{glob_escape(output.name)}.*.partial{output.suffix}"):
            stale.unlink(missing_ok=True)  # a killed run's encoder file (its frames are in the folder)
        self.folder.mkdir(exist_ok=True)
        self._write_index()

    def _write_index(self) -> None:
        from jaxdream.files import write_atomically

        write_atomically(self.key_file, json.dumps({"key": self.key, "frames": self.hashes}), "the resume key",
                         VideoError)

    @staticmethod
    def folder_for(output: str | Path) -> Path:
        """The hidden folder beside ``output`` that holds its finished frames."""
        output = Path(output)
        return output.parent / f".{output.name}.frames"

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.png"

    def finished(self, limit: int, width: int, height: int) -> int:
        """How many frames from the first are stored, readable and of the video's size (a damaged or foreign one
        is dreamed again, with every frame after it)."""
        count = 0
        while count < limit and (frame := self.load(count)) is not None and frame.shape == (height, width, 3):
            count += 1
        return count

    def load(self, index: int) -> np.ndarray | None:
        """A stored frame, or None when it is missing, unreadable or not the bytes this run stored."""
        import hashlib
        import io

        from PIL import Image

        path = self.path(index)
        try:
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        except OSError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != self.hashes.get(path.name):
            return None
        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"), np.uint8)
        except (OSError, ValueError):
            return None

    def save(self, index: int, frame: np.ndarray) -> None:
        import hashlib

        from PIL import Image

        from jaxdream.files import image_bytes, write_atomically

        data = image_bytes(Image.fromarray(frame, "RGB"), "PNG")
        write_atomically(self.path(index), data, "a video frame", VideoError)
        self.hashes[self.path(index).name] = hashlib.sha256(data).hexdigest()
        self._write_index()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def dream_videos(
    model: Any, inputs: list[str | Path], outputs: list[str | Path], layer: int | str, *, iters: int = 10,
    layer_range: int = 1, octaves: int = 4, rate: float = 0.04, thresh: float = 1.0, norm: bool = True,
    seed: int = 0, blend: float = 0.5, flow: str = "dis", precision: str | None = None, tile: int | None = None,
    memory: str | int | None = None, resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VideoStats:
    """Dream every frame of each input video (all of one size: they dream side by side, one vmapped batch per frame
    through one compiled program) into the matching output, keeping each input's frame rate and sound.

    Each frame starts from ``Coherence(flow, blend)``: the new frame blended with the previous dreamed frame warped
    by the input's optical flow. Every frame uses the same seed-drawn schedule, so a still scene stays still.
    ``resume``: continue an interrupted run from its stored frames (the result is byte-identical).
    ``progress(done, total)`` follows the frames.
    """
    from jaxdream.dream import core, engine, tiles
    from jaxdream.dream.validate import check_round_options, validate
    from jaxdream.image import to_uint8

    if not inputs or len(inputs) != len(outputs):
        raise OptionError("dream_videos needs one output per input video")
    outputs = [check_output(path, "output") for path in outputs]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise OptionError("two input videos would write the same output")
    if {Path(p).resolve() for p in inputs} & {p.resolve() for p in outputs}:
        raise OptionError("an output would replace its input video; choose another --out")
    coherence = Coherence(flow, blend)
    infos = [probe(path) for path in inputs]
    first = infos[0]
    for info in infos[1:]:
        if (info.width, info.height) != (first.width, first.height):
            raise VideoError(f"{info.path} is {info.width}x{info.height} and {first.path} {first.width}x"
                             f"{first.height}: videos dreamed together must share a size (dream them separately)")
    config = core.DreamConfig(layer=model.resolve_layer(layer), layer_range=layer_range, iters=iters,
                              octaves=octaves, norm="std" if norm else "none", precision=precision)
    check_round_options(rate, 1, 1.0, 0.0)
    seed = checks.check_seed(seed)
    tiles.check_tile(tile)
    tiles.parse_memory(memory)
    validate(model, config, first.height, first.width)
    if coherence.flow == "dis" and coherence.blend > 0 and max(first.width, first.height) < DIS_MIN_SIDE:
        raise OptionError(f"{first.path}: {first.width}x{first.height} frames are too small for DIS optical flow "
                          f"(it needs a side of {DIS_MIN_SIDE} pixels); use --flow none")
    run = engine.Run(rate=rate, aux=engine.objective_input(model, config, thresh, 0, None), seed=seed, tile=tile,
                     memory=memory, keep_rounds=False)
    options = {"layer": config.layer, "range": layer_range, "iters": iters, "octaves": octaves, "rate": rate,
               "thresh": thresh, "norm": norm, "seed": seed, "blend": blend, "flow": flow,
               "precision": config.precision, "tile": tile, "model": model.fingerprint,
               "weights": model.weights_digest}
    digests = [sha256_of(info.path) for info in infos]  # the batch too: vmapped results may differ in the last bit
    stores = [FrameStore(out, hashlib.sha256(json.dumps({**options, "input": digest, "batch": digests},
                                                        sort_keys=True).encode()).hexdigest(), resume)
              for digest, out in zip(digests, outputs, strict=True)]
    total = max(info.frames for info in infos)
    done = [store.finished(info.frames, info.width, info.height) for store, info in zip(stores, infos, strict=True)]
    restart = min(done)  # the batch dreams frame t of every video at once: it resumes where the slowest stopped
    stats = VideoStats(resumed_frames=restart)
    encoders: list[Encoder] = []
    try:
        for info, out in zip(infos, outputs, strict=True):
            encoders.append(Encoder(out, info.width, info.height, info.fps, info))
        readers = [read_frames(info) for info in infos]
        previous_frames: list[np.ndarray | None] = [None] * len(infos)
        previous_dreams: list[np.ndarray | None] = [None] * len(infos)
        for t in range(total):
            interrupts.check()
            live = [t < info.frames for info in infos]
            with stats.timing("decode"):
                frames = [_next_frame(reader, info, t) if on else previous
                          for reader, info, on, previous in zip(readers, infos, live, previous_frames, strict=True)]
            if t < restart:
                dreamed = [store.load(t) for store in stores]  # checked by finished()
            else:
                with stats.timing("flow"):
                    starts = np.stack([coherence.start(frame, previous, dream) for frame, previous, dream
                                       in zip(frames, previous_frames, previous_dreams, strict=True)])
                with stats.timing("dream"):
                    with engine.repeats(total - t - 1):
                        result = engine.dream(model, starts, config, run)
                    dreamed = [to_uint8(image) for image in np.asarray(result[-1])]
                    for store, image, on, index in zip(stores, dreamed, live, done, strict=True):
                        if on and t >= index:
                            store.save(t, image)
                stats.frames += sum(live)
            with stats.timing("encode"):
                for encoder, image, on in zip(encoders, dreamed, live, strict=True):
                    if on:
                        encoder.write(image)
            previous_frames, previous_dreams = frames, dreamed
            if progress is not None:
                progress(t + 1, total)
        with stats.timing("encode"):
            for encoder, info in zip(encoders, infos, strict=True):
                if encoder.count != info.frames:
                    raise VideoError(f"{info.path}: {encoder.count} frames decoded, {info.frames} counted")
                encoder.close()
    except BaseException:
        for encoder in encoders:
            encoder.abort()
        raise
    for store in stores:
        store.remove()
    return stats


def _next_frame(reader: Iterator[np.ndarray], info: VideoInfo, index: int) -> np.ndarray:
    try:
        return next(reader)
    except StopIteration:
        raise VideoError(f"{info.path}: frame {index} could not be decoded ({info.frames} counted)") from None


def flicker(frames: list[np.ndarray], inputs: list[np.ndarray]) -> float:
    """Mean |out_t - warp(out_{t-1})| over a clip of uint8 frames, in [0, 1] units: how much a dreamed video changes
    beyond the motion of its scene. The warp follows the input frames' Farneback flow (another algorithm than the
    DIS flow the dream itself follows, so the measure does not favour it)."""
    cv2 = _cv2()
    changes = []
    for t in range(1, len(frames)):
        gray, previous_gray = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (inputs[t], inputs[t - 1]))
        back = cv2.calcOpticalFlowFarneback(gray, previous_gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        ys, xs = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]].astype(np.float32)
        moved = cv2.remap(frames[t - 1].astype(np.float32) / 255.0, xs + back[..., 0], ys + back[..., 1],
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        changes.append(np.abs(frames[t].astype(np.float32) / 255.0 - moved).mean())
    return float(np.mean(changes))


__all__ = ["Coherence", "Encoder", "FrameStore", "VideoError", "VideoInfo", "VideoStats", "check_output",
           "count_frames", "dream_videos", "flicker", "probe", "read_frames"]
