"""Events out through the real CLI: `streamer run` with the sprite detector (tests/sprites.py), a real
Mosquitto (tests/mosquitto.py), a real HTTP server for webhooks (tests/webhooks.py), snapshots and
clips read back (OpenCV, PyAV).

A file: one run publishes the file's events and counts to MQTT, POSTs them to a webhook that
answers 500 twice then 200, writes snapshots and cuts one clip from the file's own frames (a
person, then a dog within the person's post-capture: one clip). A live camera: the broker goes
away for a few seconds mid-run and comes back (the video never stalls, queued events arrive),
then the run is SIGKILLed (the broker sends the last will). (A wrong MQTT password:
tests/integration/test_mqtt_output.py.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamer.server import free_port

from .. import sprites as S
from ..cameras import RtspCamera, Run
from ..helpers import read_code, read_jsonl, read_video, streamer, wait_until
from ..mosquitto import Broker, Subscriber
from ..webhooks import Receiver

pytestmark = pytest.mark.slow

RATE = 25
PRE, POST = 2.0, 1.0
ZONES = """\
lines:
  door: {points: [[160, 0], [160, 240]]}
zones:
  yard: {points: [[170, 40], [320, 40], [320, 240], [170, 240]]}
"""


def _box(cx, cy, w, h):
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def scene() -> S.Scene:
    """8 s at 25 fps: a person walks across the door (frames 60-100), then a dog the other way
    (108-130), while the person's clip is still open; nothing after frame 130."""
    return S.Scene("events", 200, [
        S.Sprite("a", "red", lambda i: _box(40 + 6 * (i - 60), 130, 40, 60) if 60 <= i <= 100 else None),
        S.Sprite("b", "blue", lambda i: _box(280 - 8 * (i - 108), 180, 50, 40) if 108 <= i <= 130 else None),
    ], width=320, height=240, rate=RATE)


def edge_difference(drawn: np.ndarray, plain: np.ndarray, box) -> float:
    """How much the strip just above `box` differs between two pictures: where the box's label is
    drawn (filled with the track's colour; the sprite fills the box itself, so its outline alone
    would hardly show)."""
    x1, y1, _, _ = (int(round(v)) for v in box)
    band = (slice(max(0, y1 - 10), y1 - 2), slice(x1 + 2, x1 + 30))
    return float(np.abs(drawn[band].astype(int) - plain[band].astype(int)).mean())


def test_a_file_to_mqtt_webhooks_snapshots_and_a_clip(tmp_path, server_sprites):
    video = tmp_path / "walk.mp4"
    S.write_scene(video, scene())
    zones = tmp_path / "zones.yaml"
    zones.write_text(ZONES)
    clips, snaps = tmp_path / "clips", tmp_path / "snaps"
    clips.mkdir()
    snaps.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("hook key\n")
    summary, events_log = tmp_path / "summary.json", tmp_path / "events.jsonl"
    with Broker(tmp_path) as broker, Subscriber(broker.port, "#") as sub, \
            Receiver(lambda n: 500 if n < 2 else 200) as hook:
        result = streamer("run", video, "--triton", server_sprites.grpc_url, "--zones", zones,
                          "--mqtt", f"mqtt://127.0.0.1:{broker.port}/t1", "--webhook", hook.url,
                          "--webhook-secret-file", secret, "--snapshots", snaps, "--clips", clips,
                          "--pre-capture", PRE, "--post-capture", POST, "--events", events_log,
                          "--summary", summary, timeout=300)
        assert result.returncode == 0, result.stderr
        sub.wait_for(lambda m: any(x.topic == "t1/available" and x.text == "offline" for x in m), 10, "offline")
        messages = sub.snapshot()
        requests = list(hook.requests)
    report = json.loads(summary.read_text())
    logged = read_jsonl(events_log)
    assert logged[0]["type"] == "new" and logged[0]["after"]["label"] == "person"
    for object_id in {e["after"]["id"] for e in logged}:  # each object: new first, end last
        kinds = [e["type"] for e in logged if e["after"]["id"] == object_id]
        assert kinds[0] == "new" and kinds[-1] == "end" and "end" not in kinds[:-1], kinds
    assert {e["after"]["label"] for e in logged} == {"person", "dog"}

    # MQTT: every event, in order, the same JSON as the events log (paths included)
    published = [json.loads(m.text) for m in messages if m.topic == "t1/events"]
    assert published == logged
    assert published[0]["type"] == "new" and published[0]["before"] is None
    assert all(e["before"] is not None for e in published if e["type"] != "new")
    # the retained counts are the report's
    counts = report["streams"][0]["lines"]["door"]
    assert sum(sum(per.values()) for per in counts.values()) == 2  # the person and the dog crossed
    for label in {lab for per in counts.values() for lab in per}:
        retained = [json.loads(m.text) for m in messages if m.topic == f"t1/walk.mp4/door/{label}"]
        assert retained[-1] == {"in": counts["in"].get(label, 0), "out": counts["out"].get(label, 0)}
    zone = report["streams"][0]["zones"]["yard"]
    retained = [json.loads(m.text) for m in messages if m.topic == "t1/walk.mp4/yard/person"][-1]
    assert retained == {"inside": zone["inside"].get("person", 0), "entered": zone["entered"]["person"],
                        "max_inside": zone["max_inside"]["person"]}
    assert any(m.topic.startswith("homeassistant/sensor/streamer_t1_walk_mp4/door_person") for m in messages)
    assert [m.text for m in messages if m.topic == "t1/available"] == ["online", "offline"]
    snapshot_jpegs = [m for m in messages if m.topic.endswith("/snapshot")]
    assert {m.topic for m in snapshot_jpegs} == {"t1/walk.mp4/person/snapshot", "t1/walk.mp4/dog/snapshot"}

    # the webhook: 500 twice (retried), then every event once, in order, signed
    assert len(requests) == len(logged) + 2
    assert [json.loads(r["body"]) for r in requests[2:]] == logged
    for r in requests:
        assert r["headers"]["X-Streamer-Signature"] == \
            "sha256=" + hmac.new(b"hook key", r["body"], hashlib.sha256).hexdigest()

    # snapshots: one per object, named in its events, the box drawn on the frame it was taken from
    source = read_video(video)
    news = [e for e in logged if e["type"] == "new"]
    assert sorted(p.name for p in snaps.iterdir()) == sorted(Path(e["after"]["snapshot"]).name for e in news)
    for event in news:
        after = event["after"]
        picture = cv2.cvtColor(cv2.imread(after["snapshot"]), cv2.COLOR_BGR2RGB)
        assert picture.shape == (240, 320, 3)
        plain = source.images[after["frame_index"]]
        assert edge_difference(picture, plain, after["box"]) > 40
        assert all(e["after"]["snapshot"] == after["snapshot"] for e in logged if e["after"]["id"] == after["id"])

    # the clip: one for both objects, named in both end events, from a keyframe at most PRE before
    # the person's first event, every frame in order, boxes drawn, past POST after the dog was last seen
    written = sorted(clips.iterdir())
    assert len(written) == 1 and not written[0].name.startswith(".")
    assert {e["after"]["clip"] for e in logged} == {str(written[0])}
    clip = read_video(written[0])
    import av

    with av.open(str(written[0])) as container:
        first = next(p for p in container.demux(video=0) if p.size)
        assert first.is_keyframe
    codes = clip.codes
    assert codes == list(range(codes[0], codes[0] + len(codes)))
    person = news[0]["after"]
    assert person["frame_index"] - PRE * RATE <= codes[0] <= person["frame_index"] - (PRE - 1) * RATE
    dog_last = max(e["after"]["frame_index"] for e in logged if e["after"]["label"] == "dog")
    assert codes[-1] >= dog_last + POST * RATE and codes[-1] < 199  # cut before the file ended
    drawn = clip.images[codes.index(person["frame_index"])]
    assert edge_difference(drawn, source.images[person["frame_index"]], person["box"]) > 40
    assert read_code(drawn) == person["frame_index"]

    outputs = {o["name"].split()[0]: o for o in report["event_outputs"]}
    assert outputs["mqtt"]["sent"] == len(logged) and outputs["webhook"]["sent"] == len(logged)
    assert outputs["clips"]["sent"] == 1 and outputs["snapshots"]["sent"] == len(news)
    assert all(o["failed"] == 0 and o["dropped"] == 0 and o["state"] == "closed" for o in outputs.values())


def test_live_broker_away_and_back_then_sigkill_sends_the_last_will(tmp_path, server_sprites):
    clip = tmp_path / "camera.mp4"
    S.write_scene(clip, S.camera(frames=600))  # 24 s: longer than the test
    zones = tmp_path / "zones.yaml"
    zones.write_text("lines:\n  door: {points: [[130, 40], [130, 288]]}\n")
    broker = Broker(tmp_path, persistent=True)
    web, metrics = free_port(), free_port()
    with RtspCamera(clip) as camera, broker, Subscriber(broker.port, "live/#", persistent=True) as sub:
        name = f"mqtt mqtt://127.0.0.1:{broker.port}/live"
        run = Run("run", camera.url, "--triton", server_sprites.grpc_url, "--zones", zones,
                  "--mqtt", f"mqtt://127.0.0.1:{broker.port}/live", "--status-every", "1",
                  "--web", web, "--metrics-port", metrics)
        try:
            run.wait_for("connected", 60)
            sub.wait_for(lambda m: any(x.topic == "live/events" for x in m), 60, "the first event")
            assert output_state(web, name) == ("connected", 1)
            broker.stop()
            # the status line, /api/state and the metrics say so; the video goes on
            run.wait_for(f"event outputs: {name} retrying", 30)
            assert output_state(web, name)[0] == "retrying"
            assert f'streamer_event_output_up{{output="{name}"}} 0.0' in scrape(metrics)
            since = len(run.err_lines)
            wait_until(lambda: len(moving(run.err_lines[since:])) >= 3, 30,
                       what="status lines of a video going on without the broker")
            before = len([m for m in sub.snapshot() if m.topic == "live/events"])
            broker.start()
            # the crossings made while the broker was away arrive, then new ones
            sub.wait_for(lambda m: len([x for x in m if x.topic == "live/events"]) >= before + 2, 60,
                         "events after the broker came back")
            sub.wait_for(lambda m: any(x.topic == "live/cam1/door/person" for x in m), 30, "retained counts")
            wait_until(lambda: output_state(web, name)[0] == "connected", 30, what="connected again")
            os.kill(run.proc.pid, signal.SIGKILL)
            run.finish(30)
            sub.wait_for(lambda m: [x.text for x in m if x.topic == "live/available"][-1:] == ["offline"], 60,
                         "the last will")
        finally:
            run.kill()
    events = [json.loads(m.text) for m in sub.snapshot() if m.topic == "live/events"]
    assert events[0]["type"] == "new" and events[0]["after"]["wall_time"] is not None


def output_state(web: int, name: str):
    """(state, up) of the event output `name` in /api/state (up: 1 when connected)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/state", timeout=5) as response:
        found = {o["name"]: o for o in json.loads(response.read())["event_outputs"]}
    state = found[name]["state"]
    return state, int(state == "connected")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def moving(lines) -> list:
    """The status lines (`[12 s] display 24.8 fps, ...`) of a video that is being shown."""
    found = [re.match(r"\[[0-9]+ s\] display ([0-9.]+) fps", line) for line in lines]
    return [m for m in found if m and float(m.group(1)) > 5]
