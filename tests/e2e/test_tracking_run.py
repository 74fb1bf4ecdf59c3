"""Tracking through the real pipeline: `streamer run` with the sprite detector (tests/sprites.py)
served by the real embedded Triton, on clips whose true boxes are known.

Files, `--infer-every 5`: every frame written in order; a log record for every frame, `ok` exactly
on the scheduled frames; on the frames the model did not see, the boxes follow the sprites; ids
stay with their sprites; nothing crosses a cut; on the frames it saw, the model's own boxes (as
`--infer-every 1` gives them). `render` redraws such a run exactly. Live, over a real RTSP camera
with a model far slower than the camera: the boxes drawn on the shown frames follow the sprites
better than holding the last answer (`--no-track`). No timing asserts: waits poll with deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

from streamer.server import free_port

from .. import sprites as S
from ..conftest import serve_sprites
from ..cameras import RtspCamera, Run
from ..helpers import inference_count, read_jsonl, read_video, recorded_in_order, streamer, wait_until

pytestmark = pytest.mark.slow

EVERY = 5
BOX_TOL, SCORE_TOL = 0.5, 2e-3  # the project's parity tolerance (px, score)
SLOW_DELAY_US = 600_000  # the slow server's model: about 0.6 s an answer, 1/15 of a 25 fps camera


@pytest.fixture(scope="module")
def server_sprites_slow(tmp_path_factory):
    """The sprite model made slow without using CPU: Triton's batcher holds each lone request."""
    yield from serve_sprites(S.export_sprites(tmp_path_factory.mktemp("repo_sprites_slow"),
                                              max_queue_delay_us=SLOW_DELAY_US))


@dataclass
class FileRun:
    scene: S.Scene
    truth: S.Truth
    clip: Path
    returncode: int
    stdout: str
    stderr: str
    records: List[dict]
    log: Path
    out: Optional[Path] = None
    summary: Optional[dict] = None

    @property
    def inferred(self) -> List[int]:
        return S.inferred_frames(self.scene.frames, EVERY, self.scene.cuts)

    def tracked_frames(self) -> List[int]:
        return [r["frame"] for r in self.records if r["status"] == "tracked"]

    def matches(self, index: int) -> Dict[str, tuple]:
        return S.match(self.truth.boxes[index], self.records[index]["detections"])

    def ids(self, key: str) -> List[Optional[int]]:
        """The sprite's track id on every frame (None where no box matches it)."""
        return [self.matches(i).get(key, (0.0, None))[1] for i in range(self.scene.frames)]

    def mean_iou_tracked(self, key: str) -> float:
        values = [self.matches(i)[key][0] for i in self.tracked_frames() if key in self.truth.boxes[i]]
        return float(np.mean(values))


class Runs:
    """Each scene's clip and runs, made once for the module."""

    def __init__(self, root: Path, server):
        self.root, self.server = root, server
        self.clips: Dict[str, tuple] = {}
        self.runs: Dict[tuple, FileRun] = {}

    def clip(self, name: str):
        if name not in self.clips:
            scene = S.SCENES[name]()
            path = self.root / f"{name}.mp4"
            self.clips[name] = (scene, path, S.write_scene(path, scene))
        return self.clips[name]

    def run(self, name: str, *flags: str, out: bool = False) -> FileRun:
        key = (name, flags, out)
        if key not in self.runs:
            scene, clip, truth = self.clip(name)
            tag = "_".join(f.strip("-") for f in flags) or "default"
            jsonl, summary = self.root / f"{name}.{tag}.jsonl", self.root / f"{name}.{tag}.json"
            video = self.root / f"{name}.{tag}.mp4" if out else None
            args = ["run", clip, "--triton", self.server.grpc_url, "--detections", jsonl, "--summary", summary, *flags]
            if video is not None:
                args += ["--out", video]
            result = streamer(*args, timeout=300)
            assert result.returncode == 0, result.stderr
            self.runs[key] = FileRun(scene, truth, clip, result.returncode, result.stdout, result.stderr,
                                     read_jsonl(jsonl), jsonl, video, json.loads(summary.read_text()))
        return self.runs[key]

    def sparse(self, name: str) -> FileRun:
        return self.run(name, "--infer-every", str(EVERY), out=True)

    def dense(self, name: str) -> FileRun:
        return self.run(name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, server_sprites) -> Runs:
    return Runs(tmp_path_factory.mktemp("tracking_runs"), server_sprites)


def same_boxes(a: List[dict], b: List[dict], where: str) -> None:
    """The same detections within the parity tolerance (order aside)."""
    key = lambda d: (d["label"], d["box"])  # noqa: E731
    a, b = sorted(a, key=key), sorted(b, key=key)
    assert [d["label"] for d in a] == [d["label"] for d in b], where
    for x, y in zip(a, b):
        assert np.allclose(x["box"], y["box"], atol=BOX_TOL, rtol=0), (where, x, y)
        assert abs(x["score"] - y["score"]) <= SCORE_TOL, (where, x, y)


# -- files -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(S.SCENES))
def test_infer_every_writes_every_frame_and_infers_exactly_the_schedule(runs, name):
    run = runs.sparse(name)
    n = run.scene.frames
    # every frame written, in order, with the input's timestamps
    written, source = read_video(run.out), read_video(run.clip)
    assert written.codes == list(range(n))
    assert written.pts == source.pts
    # a record for every frame: ok on frames 0, N, 2N, ..., each cut and the last; tracked on the others
    assert [r["frame"] for r in run.records] == list(range(n))
    ok = [r["frame"] for r in run.records if r["status"] == "ok"]
    assert ok == run.inferred
    assert {r["status"] for r in run.records} == {"ok", "tracked"}
    assert all("track_id" in d for r in run.records for d in r["detections"])
    # the accounting line and the report count them
    tracked = n - len(ok)
    assert f"frames: read {n}, inferred {len(ok)}, written {n}, failed 0, tracked {tracked} |" in run.stdout
    assert run.summary["streams"][0]["frames"] == {
        "read": n, "inferred": len(ok), "written": n, "failed": 0, "dropped": 0, "tracked": tracked}
    # on the frames the model saw: its own boxes, as --infer-every 1 gives them
    dense = runs.dense(name)
    assert {r["status"] for r in dense.records} == {"ok"}
    for i in ok:
        same_boxes(run.records[i]["detections"], dense.records[i]["detections"], f"{name} frame {i}")
    assert sum(len(run.records[i]["detections"]) for i in ok) > 0


def test_the_seed_model_and_the_u8_model_find_the_same_sprites(runs):
    seed, u8 = runs.run("turning", "--model", "fasterrcnn"), runs.dense("turning")
    assert seed.summary["model"]["served_model"] == "fasterrcnn"
    assert u8.summary["model"]["served_model"] == "fasterrcnn_u8"
    for a, b in zip(seed.records, u8.records):
        same_boxes(a["detections"], b["detections"], f"frame {a['frame']}")
    for i, record in enumerate(u8.records):  # and the model finds every sprite where it is
        assert all(value >= 0.9 for value, _ in u8.matches(i).values()), (i, record)


def test_max_frames_infers_the_last_frame_taken_and_writes_every_one(runs):
    run = runs.run("turning", "--infer-every", str(EVERY), "--max-frames", "23")
    assert [r["frame"] for r in run.records] == list(range(23))
    assert [r["frame"] for r in run.records if r["status"] == "ok"] == [0, 5, 10, 15, 20, 22]
    assert run.summary["streams"][0]["frames"] == {
        "read": 23, "inferred": 6, "written": 23, "failed": 0, "dropped": 0, "tracked": 17}
    for i in range(23):
        assert all(value >= 0.85 for value, _ in run.matches(i).values()), i


class AnswerClock:
    """The server's answer count (frames sent by clients) and how long it has stood still."""

    def __init__(self, http_url: str, before: int):
        self.http_url, self.before = http_url, before
        self.last, self.since = 0, time.monotonic()

    def count(self) -> int:
        now = inference_count(self.http_url) - self.before
        if now != self.last:
            self.last, self.since = now, time.monotonic()
        return now

    def quiet_for(self) -> float:
        return time.monotonic() - self.since


def test_ctrl_c_writes_the_frames_the_tracker_holds(runs, tmp_path, server_sprites_slow):
    """Interrupted between two inferred frames (a slow model): the frames held for interpolation
    are written with their carried boxes; what was written is whole and in order."""
    scene, clip, truth = runs.clip("straight")
    out, log, summary = tmp_path / "out.mp4", tmp_path / "d.jsonl", tmp_path / "s.json"
    before = inference_count(server_sprites_slow.http_url)
    # one request at a time: after each answer the next inferred frame is sent and held ~0.6 s by the
    # slow model, while the frames between the two are held by the tracker
    run = Run("run", clip, "--triton", server_sprites_slow.grpc_url, "--infer-every", EVERY, "--out", out,
              "--detections", log, "--summary", summary, "--in-flight", 1)
    try:
        answered = AnswerClock(server_sprites_slow.http_url, before)
        # Ctrl-C well inside an inference (its 3rd answer at least 0.2 s old, the next not yet in): the
        # frames after the last answered one are held then, never in the few ms after an answer
        wait_until(lambda: answered.count() >= 3 and answered.quiet_for() >= 0.2, 120, interval=0.02,
                   what="the middle of the 4th inference")
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 130, run.stderr
    finally:
        run.kill()
    records = read_jsonl(log)
    n = len(records)
    assert 2 * EVERY < n < scene.frames, n  # frames 0, 5 and 10 answered, those after 10 held
    assert [r["frame"] for r in records] == list(range(n))
    assert read_video(out).codes == list(range(n))
    frames = json.loads(summary.read_text())["streams"][0]["frames"]
    assert frames["written"] == n and frames["dropped"] == frames["read"] - n
    ok = [r["frame"] for r in records if r["status"] == "ok"]
    assert ok == [i for i in S.inferred_frames(scene.frames, EVERY) if i < n]
    # the frames after the last inferred one were held when Ctrl-C came: written with carried boxes
    tail = records[ok[-1] + 1:]
    assert tail and {r["status"] for r in tail} == {"tracked"}
    for r in tail[:EVERY]:
        got = S.match(truth.boxes[r["frame"]], r["detections"])
        assert all(value >= 0.8 for value, _ in got.values()), r


@pytest.mark.parametrize("name", ["straight", "turning"])
def test_boxes_between_inferences_follow_the_sprites_with_one_id_each(runs, name):
    run = runs.sparse(name)
    for sprite in run.scene.sprites:
        assert run.mean_iou_tracked(sprite.key) >= 0.9, sprite.key
        ids = run.ids(sprite.key)
        assert None not in ids, f"{sprite.key} lost its box on frames {[i for i, t in enumerate(ids) if t is None]}"
        assert len(set(ids)) == 1, f"{sprite.key}: ids {ids}"
    assert len({run.ids(s.key)[0] for s in run.scene.sprites}) == len(run.scene.sprites)


def test_crossing_sprites_switch_ids_at_most_once(runs):
    run = runs.sparse("crossing")
    ids = {s.key: run.ids(s.key) for s in run.scene.sprites}
    for key, seq in ids.items():
        assert S.switches(seq) <= 1, f"{key}: {seq}"
    # before the crossing and after it, the two sprites have ids of their own
    assert ids["a"][0] != ids["b"][0] and ids["a"][-1] != ids["b"][-1]


def test_a_sprite_leaving_and_returning_is_dropped_then_found_again(runs):
    run = runs.sparse("leaving")
    out = [i for i in range(run.scene.frames) if "a" not in run.truth.boxes[i]]
    assert out, "the sprite never left"
    # the one that stays keeps its id
    stays = run.ids("b")
    assert None not in stays and len(set(stays)) == 1
    # while the car is away, no car box beyond the carried frames after it was last seen
    car = run.scene.sprites[0].label
    last_seen = max(i for i in range(out[0]) if "a" in run.truth.boxes[i])
    for i in out:
        drawn = [d for d in run.records[i]["detections"] if d["label"] == car]
        assert not drawn or i - last_seen <= EVERY, (i, drawn)
    # back in view: boxed again from the next inferred frame on, with one id from then on
    back = [i for i in range(out[-1] + 1, run.scene.frames)]
    ids_back = [run.ids("a")[i] for i in back if i >= min(f for f in run.inferred if f > out[-1])]
    assert None not in ids_back and len(set(ids_back)) == 1


def test_an_occluded_sprite_is_not_drawn_long_while_hidden_and_keeps_at_most_two_ids(runs):
    run = runs.sparse("occluded")
    hidden = [i for i in range(run.scene.frames) if "a" not in run.truth.boxes[i]]
    assert hidden and hidden == list(range(hidden[0], hidden[-1] + 1)), hidden
    person = run.scene.sprites[0].label
    seen_ok = [i for i in run.inferred if i < hidden[0] and run.matches(i)["a"][0] > 0]
    for i in hidden:
        drawn = [d for d in run.records[i]["detections"] if d["label"] == person]
        assert not drawn or i - seen_ok[-1] <= EVERY, (i, drawn)
    assert S.switches(run.ids("a")) <= 1
    other = run.ids("b")
    assert None not in other and len(set(other)) == 1


def test_no_box_crosses_a_cut(runs):
    run = runs.sparse("cut")
    at = run.scene.cuts[0]
    assert run.records[at]["status"] == "ok"
    before = {d["track_id"] for r in run.records[:at] for d in r["detections"]}
    after = {d["track_id"] for r in run.records[at:] for d in r["detections"]}
    assert before and after and not before & after
    # the frames before the cut keep boxes on the sprites there (none pulled towards the next shot)
    for i in range(at):
        for key, (value, _) in run.matches(i).items():
            assert value >= 0.85, (i, key, value)
    for i in range(at, run.scene.frames):
        assert len(run.records[i]["detections"]) == len(run.truth.boxes[i])


def test_no_track_logs_the_models_boxes_only_and_refuses_infer_every(runs, tmp_path):
    plain = runs.run("straight", "--no-track")
    dense = runs.dense("straight")
    assert [r["frame"] for r in plain.records] == list(range(plain.scene.frames))
    assert {r["status"] for r in plain.records} <= {"ok", "failed"}
    assert not any("track_id" in d for r in plain.records for d in r["detections"])
    assert "tracked" not in plain.stdout and plain.summary["streams"][0]["frames"]["tracked"] == 0
    for a, b in zip(plain.records, dense.records):
        same_boxes(a["detections"], b["detections"], f"frame {a['frame']}")

    _, clip, _ = runs.clip("straight")
    refused = streamer("run", clip, "--infer-every", 3, "--no-track", "--detections", tmp_path / "d.jsonl",
                       timeout=60)
    assert refused.returncode == 2
    assert "--infer-every needs tracking" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "d.jsonl").exists()


def test_render_redraws_an_infer_every_run_pixel_for_pixel(runs, tmp_path):
    run = runs.sparse("cut")
    again = tmp_path / "again.mp4"
    result = streamer("render", run.clip, "--detections", run.log, "--out", again)
    assert result.returncode == 0, result.stderr
    assert f"rendered {run.scene.frames} frame(s)" in result.stdout
    original, rendered = read_video(run.out), read_video(again)
    assert rendered.pts == original.pts
    assert len(rendered.images) == len(original.images) == run.scene.frames
    for i, (a, b) in enumerate(zip(original.images, rendered.images)):
        assert np.array_equal(a, b), f"frame {i} differs ({run.records[i]['status']})"


# -- live --------------------------------------------------------------------------------------------

LIVE_FRAMES = 300


def shown_detections(run: Run, port: int, timeout: float = 240) -> Dict[int, List[dict]]:
    """Poll the run's /api/state until it ends: frame index -> the detections drawn on that frame."""
    seen: Dict[int, List[dict]] = {}
    deadline = time.monotonic() + timeout
    while run.proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as resp:
                state = json.loads(resp.read())
        except (OSError, ValueError):
            state = {"cameras": []}
        for cam in state["cameras"]:
            if cam.get("frame") is not None and cam.get("up"):
                seen.setdefault(int(cam["frame"]), cam["detections"])
        time.sleep(0.02)
    return seen


def live_run(cam: RtspCamera, server, tmp_path: Path, *flags: str) -> dict:
    tag = "_".join(f.strip("-") for f in flags) or "track"
    out, dets, summary = tmp_path / f"{tag}.mp4", tmp_path / f"{tag}.jsonl", tmp_path / f"{tag}.json"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "STREAMER_WEB_TOKEN"}
    run = Run("run", cam.url, "--triton", server.grpc_url, "--max-frames", LIVE_FRAMES, "--out", out,
              "--detections", dets, "--summary", summary, "--web", f"127.0.0.1:{port}", *flags, env=env)
    try:
        seen = shown_detections(run, port)
        assert run.finish() == 0, run.stderr
    finally:
        run.kill()
    # every captured frame recorded in order (but those counted as dropped for display); the camera
    # serves its clip from frame 0 to each client, so a frame's code is its frame of the clip
    report = json.loads(summary.read_text())
    frames = report["streams"][0]["frames"]
    codes = read_video(out).codes
    recorded_in_order(tag, frames, codes)
    assert frames["captured"] == LIVE_FRAMES
    return {"seen": seen, "records": read_jsonl(dets), "summary": report, "out": run.out}


def live_iou(seen: Dict[int, List[dict]], truth: S.Truth) -> tuple:
    """Mean IoU of the drawn boxes with the truth, over the sampled frames from the first one with
    boxes on (each visible sprite counts; no box on it counts 0), and how many frames that is."""
    first = min(f for f, dets in seen.items() if dets)
    values = [v for f, dets in sorted(seen.items()) if f >= first
              for v, _ in S.match(truth.boxes[f], dets).values()]
    return float(np.mean(values)), len([f for f in seen if f >= first])


def test_live_boxes_follow_the_sprites_better_than_holding_the_last_answer(tmp_path, server_sprites_slow,
                                                                           server_sprites):
    """A model answering about every 15th frame, 0.6 s late: the tracker's boxes against the last
    answer held (--no-track); and the fast model offered every 15th frame (--infer-every 15)."""
    scene = S.camera()
    clip = tmp_path / "camera.mp4"
    truth = S.write_scene(clip, scene)
    with RtspCamera(clip) as cam:
        results = {
            "tracking": live_run(cam, server_sprites_slow, tmp_path),
            "holding": live_run(cam, server_sprites_slow, tmp_path, "--no-track"),
            "infer-every 15": live_run(cam, server_sprites, tmp_path, "--infer-every", "15"),
        }
    figures = {}
    for name, result in results.items():
        frames = result["summary"]["streams"][0]["frames"]
        assert frames["captured"] == frames["shown"] == LIVE_FRAMES
        assert frames["inferred"] >= 5, frames  # the model is slow, not absent
        assert frames["inferred"] * 5 < LIVE_FRAMES, frames  # ... and much slower than the camera
        iou, samples = live_iou(result["seen"], truth)
        assert samples >= 30, f"{name}: only {samples} frames sampled"
        figures[name] = (iou, samples, frames["inferred"], result["summary"]["streams"][0]["fps"])
    assert results["infer-every 15"]["summary"]["streams"][0]["frames"]["inferred"] <= LIVE_FRAMES // 15
    # the live log: one record per inferred frame, ids only with tracking
    tracked = results["tracking"]["records"] + results["infer-every 15"]["records"]
    held = results["holding"]["records"]
    assert all("track_id" in d for r in tracked for d in r["detections"])
    assert not any("track_id" in d for r in held for d in r["detections"])
    assert {r["status"] for r in tracked + held} == {"ok"}
    print("\nlive mean IoU with the truth on shown frames (IoU, frames sampled, inferred, display fps): "
          + "; ".join(f"{k} {v[0]:.3f} ({v[1]}, {v[2]}, {v[3]:.1f})" for k, v in figures.items()))
    assert figures["tracking"][0] > figures["holding"][0]
    assert figures["infer-every 15"][0] > figures["holding"][0]
