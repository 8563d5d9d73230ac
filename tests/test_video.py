"""Moving pictures: nightmare --animate and dreamed videos, on a clip made here (24 frames panning and zooming
across scream.jpg, with a 440 Hz tone), read back with ffmpeg; flicker measured with another optical flow
(Farneback) than the one the dream follows (DIS)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("cv2")
from conftest import cli, process_env
from PIL import Image

from jaxdream import interrupts, video
from jaxdream.errors import Interrupted, JaxdreamError

CLI = [sys.executable, "-c", "from jaxdream.cli import main; main()"]
WIDTH, HEIGHT, FRAMES, FPS = 128, 80, 24, 12


def _frames(shared, count=FRAMES, width=WIDTH, height=HEIGHT) -> list[np.ndarray]:
    source = Image.open(shared / "data" / "images" / "scream.jpg").convert("RGB")
    frames = []
    for t in range(count):
        scale = 0.6 * (1.0 - 0.01 * t)
        w, h = int(source.width * scale), int(source.height * scale)
        left = 10 + t * (source.width - w) // (2 * count)
        frames.append(np.asarray(source.crop((left, 20, left + w, 20 + h)).resize((width, height), Image.BILINEAR)))
    return frames


def _encode(path, frames, fps=FPS, audio=None) -> None:
    import imageio_ffmpeg

    extra = {"audio_path": str(audio), "audio_codec": "aac"} if audio else {}
    writer = imageio_ffmpeg.write_frames(str(path), frames[0].shape[1::-1], fps=fps, macro_block_size=1, quality=9,
                                         ffmpeg_log_level="error", **extra)
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


@pytest.fixture(scope="module")
def clip(shared, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    rate = 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(FRAMES * rate // FPS) / rate)).astype("<i2")
    with wave.open(str(folder / "tone.wav"), "wb") as sound:
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(rate)
        sound.writeframes(tone.tobytes())
    _encode(folder / "clip.mp4", _frames(shared), audio=folder / "tone.wav")
    return folder / "clip.mp4"


DREAM = {"iters": 10, "octaves": 2, "rate": 0.08}


def test_a_dreamed_video_keeps_frames_size_rate_and_sound_and_flickers_less(tiny_darknet, clip, tmp_path):
    inputs = list(video.read_frames(video.probe(clip)))
    flicker = {}
    for name, flow, blend in (("independent", "none", 0.0), ("coherent", "dis", 0.5)):
        out = tmp_path / f"{name}.mp4"
        stats = video.dream_videos(tiny_darknet, [clip], [out], 9, flow=flow, blend=blend, **DREAM)
        info = video.probe(out)
        assert (info.frames, info.width, info.height, info.fps) == (FRAMES, WIDTH, HEIGHT, FPS)
        assert info.audio_codec is not None and info.audio_codec.startswith("aac")
        assert stats.frames == FRAMES and set(stats.as_dict()["share"]) == {"decode", "flow", "dream", "encode"}
        dreamed = list(video.read_frames(info))
        assert np.abs(dreamed[5].astype(float) - inputs[5]).mean() > 5  # it dreamed
        flicker[name] = video.flicker(dreamed, inputs)
    assert flicker["coherent"] <= 0.7 * flicker["independent"], flicker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coherent.mp4", "independent.mp4"]  # nothing left over


@pytest.mark.slow
def test_videos_of_one_size_dream_as_one_batch(tiny_darknet, clip, shared, tmp_path):
    """Two videos side by side give each the frames it would get alone (the batch is vmapped)."""
    other = tmp_path / "other.mp4"
    _encode(other, _frames(shared, count=FRAMES - 4)[::-1], fps=10)  # shorter, another rate, no sound
    outs = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    video.dream_videos(tiny_darknet, [clip, other], outs, 9, iters=2, octaves=1)
    video.dream_videos(tiny_darknet, [other], [tmp_path / "alone.mp4"], 9, iters=2, octaves=1)
    second = video.probe(outs[1])
    assert (second.frames, second.fps, second.audio_codec) == (FRAMES - 4, 10, None)
    assert video.probe(outs[0]).frames == FRAMES
    together, alone = (list(video.read_frames(video.probe(p))) for p in (outs[1], tmp_path / "alone.mp4"))
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(together, alone, strict=True)) <= 2


def _run(*args, cwd):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env=process_env())  # the session's warm program store


@pytest.mark.process
def test_kill_and_resume_gives_the_same_bytes(shared, clip, tmp_path):
    folder = shared / "models" / "tiny-darknet"
    command = ["video", folder / "tiny.cfg", folder / "tiny.weights", clip, 9, "--iters", 3, "--octaves", 2]
    whole = _run(*command, "--out", tmp_path / "whole.mp4", "--quiet", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.Popen([*CLI, *map(str, command), "--out", str(tmp_path / "part.mp4"), "--quiet"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=process_env())
    frames = tmp_path / ".part.mp4.frames"
    deadline = time.time() + 300
    while len(list(frames.glob("*.png"))) < 8 and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stored = sorted(frames.glob("*.png"))
    assert not (tmp_path / "part.mp4").exists() and len(stored) < FRAMES
    stored[-2].write_bytes(b"not a png")  # a damaged frame is dreamed again, with every frame after it
    other = _run(*command, "--out", tmp_path / "part.mp4", "--resume", "--blend", 0.3, cwd=tmp_path)
    assert other.returncode != 0 and "other inputs, model or options" in other.stderr
    resumed = _run(*command, "--out", tmp_path / "part.mp4", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr and " 0 resumed" not in resumed.stderr
    assert (tmp_path / "part.mp4").read_bytes() == (tmp_path / "whole.mp4").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.mp4", "whole.mp4"]  # no frames, no temp files


@pytest.mark.parametrize("suffix", [".mp4", pytest.param(".gif", marks=pytest.mark.slow),
                                    pytest.param(".webp", marks=pytest.mark.slow)])
@pytest.mark.process
def test_animate_writes_one_frame_per_round(shared, tmp_path, suffix):
    folder = shared / "models" / "tiny-darknet"
    Image.open(shared / "data" / "images" / "scream.jpg").convert("RGB").resize((97, 75)).save(tmp_path / "s.png")
    done = _run("nightmare", folder / "tiny.cfg", folder / "tiny.weights", tmp_path / "s.png", 7, "-rounds", 5,
                "-zoom", 1.05, "-iters", 2, "--animate", tmp_path / f"zoom{suffix}", "--fps", 8, "--quiet",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert video.count_frames(tmp_path / f"zoom{suffix}") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png", f"zoom{suffix}"]  # no per-round images
    if suffix == ".mp4":
        info = video.probe(tmp_path / "zoom.mp4")
        assert (info.fps, info.audio_codec) == (8, None) and (info.width, info.height) == (98, 76)  # even sides


def test_bad_videos_get_one_clear_error(tiny_darknet, clip, shared, tmp_path):
    (tmp_path / "text.mp4").write_text("not a video")
    Image.new("RGB", (32, 32)).save(tmp_path / "still.png")
    with wave.open(str(tmp_path / "sound.wav"), "wb") as sound:
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000)
        sound.writeframes(np.zeros(800, "<i2").tobytes())
    cases = {"missing.mp4": "no such video", "text.mp4": "not a video", "still.png": "still image",
             "sound.wav": "no video stream"}
    for name, message in cases.items():
        with pytest.raises(JaxdreamError, match=message):
            video.dream_videos(tiny_darknet, [tmp_path / name], [tmp_path / "out.mp4"], 9)
    small = tmp_path / "small.mp4"
    _encode(small, _frames(shared, count=3, width=64, height=40))
    with pytest.raises(JaxdreamError, match="must share a size"):
        video.dream_videos(tiny_darknet, [clip, small], [tmp_path / "a.mp4", tmp_path / "b.mp4"], 9)
    with pytest.raises(JaxdreamError, match="does not exist or is not writable"):
        video.dream_videos(tiny_darknet, [clip], [tmp_path / "nowhere" / "out.mp4"], 9)
    with pytest.raises(JaxdreamError, match="--blend"):
        video.dream_videos(tiny_darknet, [clip], [tmp_path / "out.mp4"], 9, blend=float("nan"))
    with pytest.raises(JaxdreamError, match="--flow"):
        video.dream_videos(tiny_darknet, [clip], [tmp_path / "out.mp4"], 9, flow="farneback")
    with pytest.raises(JaxdreamError, match="use a name ending in"):
        video.dream_videos(tiny_darknet, [clip], [tmp_path / "out.avi"], 9)
    with pytest.raises(JaxdreamError, match="would replace its input"):
        video.dream_videos(tiny_darknet, [small], [small], 9)
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*"))


def test_ctrl_c_leaves_no_file_under_the_final_name(tiny_darknet, clip, tmp_path):
    def stop_after_three(done, total):
        if done == 3:
            interrupts.request_stop()

    try:
        with pytest.raises(Interrupted):
            video.dream_videos(tiny_darknet, [clip], [tmp_path / "out.mp4"], 9, iters=1, octaves=1,
                               progress=stop_after_three)
    finally:
        interrupts.STOP.clear()
    assert not (tmp_path / "out.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".out.mp4.frames"]  # the finished frames, for --resume
    assert len(list((tmp_path / ".out.mp4.frames").glob("*.png"))) == 3


def test_variable_frame_rate_video_gives_every_frame_once(shared, tmp_path):
    import imageio_ffmpeg

    steady = tmp_path / "steady.mp4"
    _encode(steady, _frames(shared, count=10), fps=10)
    uneven = tmp_path / "uneven.mp4"  # five frames 0.1 s apart, then five 0.5 s apart (a phone video's timing)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(steady), "-vf",
                    "setpts='if(lt(N,5),N*0.1,0.5+(N-5)*0.5)/TB'", "-fps_mode", "vfr", str(uneven)], check=True)
    info = video.probe(uneven)
    frames = list(video.read_frames(info))
    assert info.frames == len(frames) == 10
    assert all(np.abs(a.astype(int) - b).mean() > 1 for a, b in itertools.pairwise(frames))


def test_frames_too_small_for_the_flow_are_refused_before_any_work(tiny_darknet, shared, tmp_path):
    clip = tmp_path / "tiny.mp4"
    _encode(clip, _frames(shared, count=3, width=10, height=8))
    with pytest.raises(JaxdreamError, match="too small for DIS optical flow"):
        video.dream_videos(tiny_darknet, [clip], [tmp_path / "out.mp4"], 3)
    with pytest.raises(JaxdreamError, match="--tile"):
        video.dream_videos(tiny_darknet, [clip], [tmp_path / "out.mp4"], 3, flow="none", tile=-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.mp4"]


def test_no_report_or_output_overwrites_an_input(shared, tmp_path, monkeypatch, capsys):
    folder = shared / "models" / "tiny-darknet"
    image = tmp_path / "s.png"
    Image.open(shared / "data" / "images" / "scream.jpg").convert("RGB").resize((64, 48)).save(image)
    before = image.read_bytes()
    monkeypatch.chdir(tmp_path)
    for args in (["nightmare", folder / "tiny.cfg", folder / "tiny.weights", image, 7, "--stats", image],
                 ["nightmare", folder / "tiny.cfg", folder / "tiny.weights", image, 7, "--animate", tmp_path / "s.gif",
                  "--fps", 60],
                 ["weights", "convert", folder / "tiny.cfg", image, "-o", image]):
        code, _, err = cli(monkeypatch, capsys, *args)
        assert code == 1 and "Traceback" not in "\n".join(err), err
    assert image.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]


@pytest.mark.slow
@pytest.mark.process
def test_reconstruct_rounds_animate(shared, tmp_path):
    folder = shared / "models" / "tiny-darknet"
    done = _run("nightmare", folder / "tiny.cfg", folder / "tiny.weights", shared / "data" / "images" / "dog.jpg", 5,
                "-rounds", 2, "-iters", 2, "--reconstruct", "--animate", tmp_path / "r.mp4", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = video.probe(tmp_path / "r.mp4")
    assert info.frames == 2 and (info.width, info.height) == (224, 224)  # the network's size, as Darknet's


def test_a_stored_frame_repainted_before_resume_is_dreamed_again(tmp_path):
    from jaxdream.files import image_bytes

    out = tmp_path / "v.mp4"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(4)]
    store = video.FrameStore(out, "key", resume=False)
    for i, frame in enumerate(frames):
        store.save(i, frame)
    again = video.FrameStore(out, "key", resume=True)
    assert again.finished(4, 8, 6) == 4 and np.array_equal(again.load(3), frames[3])
    repainted = frames[1].copy()
    repainted[0, 0] ^= 1  # a valid PNG of the right size: only its checksum tells
    store.path(1).write_bytes(image_bytes(Image.fromarray(repainted, "RGB"), "PNG"))
    assert video.FrameStore(out, "key", resume=True).finished(4, 8, 6) == 1
