"""Event outputs without a server: their settings (URLs, secrets, masks), the bounded queue every
output shares, snapshots written and decoded, the MQTT topics and Home Assistant configs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamer.events import OutputState
from streamer.events.destinations import event_settings, mask_url, over, parse_mqtt_url
from streamer.settings import EventSettings
from streamer.events.mqtt import count_topics, discovery
from streamer.events.queued import QueuedOutput
from streamer.events.snapshots import SnapshotOutput, crop_path, snapshot_name
from streamer.events.destinations import SnapshotSettings
from streamer.settings import SettingsError
from tests.event_values import counts, image, lifecycle, state


# -- settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url,expected", [
    ("mqtt://broker", ("broker", 1883, False, None, "streamer")),
    ("mqtts://cam@broker.lan:8884/home/cams", ("broker.lan", 8884, True, "cam", "home/cams")),
    ("mqtts://broker/", ("broker", 8883, True, None, "streamer")),
    ("mqtt://user%40x@[::1]:1999/p", ("::1", 1999, False, "user@x", "p")),
])
def test_mqtt_urls(url, expected):
    s = parse_mqtt_url(url)
    assert (s.host, s.port, s.tls, s.username, s.prefix) == expected


@pytest.mark.parametrize("url,message", [
    ("mqtt://cam:hunter2@broker", "no password in the URL"),
    ("http://broker", "mqtt://"),
    ("mqtt://", "host name is missing"),
    ("mqtt://broker/a/+/b", "may not hold"),
    ("mqtt://broker/a//b", "may not hold"),
    ("mqtt://broker:99999", "--mqtt"),
])
def test_bad_mqtt_urls(url, message):
    with pytest.raises(SettingsError, match="--mqtt") as err:
        parse_mqtt_url(url)
    assert message in str(err.value) and "hunter2" not in str(err.value)


def test_mqtt_password_from_file_or_environment_never_printed(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    found = event_settings(mqtt="mqtt://cam@broker", mqtt_password_file=secret, env={})
    assert found.mqtt.password == "s3cret"
    assert "s3cret" not in repr(found) and "s3cret" not in found.mqtt.url
    assert found.mqtt.url == "mqtt://cam@broker:1883/streamer"
    from_env = event_settings(mqtt="mqtt://cam@broker", env={"STREAMER_MQTT_PASSWORD": "envpw"})
    assert from_env.mqtt.password == "envpw" and from_env.mqtt.discovery
    assert event_settings(mqtt="mqtt://broker", mqtt_discovery=False, env={}).mqtt.discovery is False
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(SettingsError, match="is empty"):
        event_settings(mqtt="mqtt://broker", mqtt_password_file=empty, env={})
    with pytest.raises(SettingsError, match="cannot read"):
        event_settings(mqtt="mqtt://broker", mqtt_password_file=tmp_path / "missing", env={})


def test_companions_need_their_output(tmp_path):
    for kwargs, named in [({"mqtt_ca": tmp_path}, "--mqtt"), ({"pre_capture": 3.0}, "--clips"),
                          ({"snapshot_crop": True}, "--snapshots"), ({"webhook_secret_file": tmp_path}, "--webhook")]:
        with pytest.raises(SettingsError, match=named):
            event_settings(env={}, **kwargs)
    with pytest.raises(SettingsError, match="mqtts"):
        event_settings(mqtt="mqtt://broker", mqtt_ca=tmp_path / "ca.pem", env={})
    clips = event_settings(clips=tmp_path, post_capture=2.5, env={}).clips
    assert (clips.pre_capture, clips.post_capture) == (5.0, 2.5)


def test_flags_win_over_the_camera_file(tmp_path):
    flags = event_settings(clips=tmp_path / "a", env={})
    file = event_settings(clips=tmp_path / "b", snapshots=tmp_path / "s", env={})
    merged = over(flags, file)
    assert merged.clips.folder == tmp_path / "a" and merged.snapshots.folder == tmp_path / "s"
    assert merged.folders == [("--snapshots", tmp_path / "s"), ("--clips", tmp_path / "a")]
    assert not EventSettings().folders


def test_webhook_urls_are_masked():
    assert mask_url("https://hooks.slack.com/services/T00/B00/XXXX") == "https://hooks.slack.com/***"
    assert mask_url("http://127.0.0.1:8080/?token=abc") == "http://127.0.0.1:8080/***"
    assert mask_url("http://host") == "http://host/"


# -- the bounded queue --------------------------------------------------------------------------

class Slow(QueuedOutput):
    def __init__(self, capacity, said, lossless=False):
        super().__init__("slow", capacity, said.append, lossless=lossless, drain_s=0.2)
        self.gate = threading.Event()
        self.handled = []

    def handle(self, item):
        if self.wait(5, self.gate.is_set):  # an output's wait ends at close()'s deadline
            self.handled.append(item)
            self.count(sent=1)
        else:
            self.count(failed=1)


def test_a_full_queue_drops_counts_and_says_so_once_without_waiting():
    said = []
    out = Slow(3, said)
    with out:
        results = [out.offer(i) for i in range(20)]  # the thread is held (gate): an offer that waited for
        # room would get it once the held item timed out, and succeed instead of being dropped
        out.gate.set()
    assert results.count(False) == out.status().dropped >= 16
    assert len([line for line in said if "is full" in line]) == 1
    assert out.handled == [i for i, ok in enumerate(results) if ok]


def test_lossless_waits_for_room_and_close_gives_up_what_is_left():
    out = Slow(2, [], lossless=True)
    out.gate.set()
    with out:
        assert all(out.offer(i) for i in range(30))
    assert out.handled == list(range(30)) and out.status().dropped == 0

    stuck = Slow(5, [])
    with stuck:
        for i in range(5):
            stuck.offer(i)
    status = stuck.status()  # closed after its drain time: what it never handled is failed
    assert status.state is OutputState.CLOSED and (status.sent, status.failed) == (0, 5)


def test_an_output_that_breaks_gives_up_and_the_caller_goes_on():
    said = []

    class Broken(QueuedOutput):
        def handle(self, item):
            raise KeyError("bug")

    out = Broken("broken", 4, said.append)
    with out:
        out.offer(1)
        deadline = time.monotonic() + 5
        while out.status().state is not OutputState.GIVEN_UP and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out.offer(2) is False
    status = out.status()
    assert status.state is OutputState.GIVEN_UP and "KeyError" in status.reason
    assert (status.sent, status.failed, status.dropped) == (0, 1, 1)  # the item it broke on is failed
    assert any("stopped" in line for line in said)


def test_close_waits_for_an_output_that_stopped_on_its_own_to_finish():
    """An output whose thread stopped on an error still runs its end() (closing its file, saying
    goodbye to its broker): close() returns only once that is done, never leaving it half-way."""
    ended = threading.Event()

    class Breaks(QueuedOutput):
        def handle(self, item):
            raise KeyError("bug")

        def end(self):
            time.sleep(0.5)  # a slow goodbye (a broker's disconnect, a file's last flush)
            ended.set()

    out = Breaks("breaks", 4, lambda m: None)
    with out:
        out.offer(1)
        deadline = time.monotonic() + 5
        while out.status().state is not OutputState.GIVEN_UP and time.monotonic() < deadline:
            time.sleep(0.01)
    assert ended.is_set()


# -- snapshots ----------------------------------------------------------------------------------

def test_snapshot_names_say_camera_time_label_id():
    assert snapshot_name(state("front", 7, t=62.4)) == "front-00h01m02.40s-person-7.jpg"
    live = snapshot_name(state("gate cam", 3, t=0.0, live=True, label="traffic light"))
    assert live.startswith("gate_cam-2025") and live.endswith("-traffic_light-3.jpg")


def test_snapshots_written_atomically_with_the_box_drawn_and_a_crop(tmp_path):
    out = SnapshotOutput(SnapshotSettings(tmp_path, crop=True), lambda m: None)
    picture = image()
    with out:
        stamped = [out.stamp(e) for e in lifecycle(track_id=4, image=picture)]
        for e in stamped:
            out.publish(e)
    path = Path(stamped[0].after.snapshot)
    assert [e.after.snapshot for e in stamped] == [str(path)] * 3  # the end event names it too
    assert stamped[2].after.to_json()["has_snapshot"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, crop_path(path).name])
    written = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert written.shape == picture.shape
    # the box's edge is drawn (the plain picture is grey / green there), the inside is the object
    x1, y1, x2, y2 = 40, 30, 120, 140
    assert np.abs(written[y2, (x1 + x2) // 2].astype(int) - picture[y2, (x1 + x2) // 2]).max() > 60
    assert np.abs(written[(y1 + y2) // 2 + 10, (x1 + x2) // 2].astype(int) - picture[85, 80]).max() < 20
    crop = cv2.imread(str(crop_path(path)))
    assert crop.shape[0] < picture.shape[0] and crop.shape[1] < picture.shape[1]
    assert out.status().sent == 1 and out.status().state is OutputState.CLOSED


def test_a_snapshot_that_cannot_be_written_is_counted_and_the_run_goes_on(tmp_path):
    said = []
    out = SnapshotOutput(SnapshotSettings(tmp_path / "gone"), said.append)
    with out:
        for e in lifecycle(image=image()):
            out.publish(out.stamp(e))
    assert out.status().failed == 1 and out.status().state is OutputState.GIVEN_UP
    assert any("cannot write" in line for line in said)


# -- MQTT topics and Home Assistant -------------------------------------------------------------

def test_count_topics_and_discovery_configs():
    settings = parse_mqtt_url("mqtt://broker/site/a")
    found = list(count_topics(settings.prefix, counts(door_in=3, door_out=2, inside=0)))
    assert [(k, n, label, topic, payload) for k, n, label, topic, payload in found] == [
        ("line", "door", "person", "site/a/front/door/person", {"in": 3, "out": 2}),
        ("zone", "yard", "person", "site/a/front/yard/person", {"inside": 0, "entered": 3, "max_inside": 1})]
    configs = dict(discovery(settings, "front", "zone", "yard", "person", "site/a/front/yard/person"))
    occupancy = configs["homeassistant/binary_sensor/streamer_site_a_front/yard_person_occupancy/config"]
    assert occupancy["device_class"] == "occupancy" and occupancy["availability_topic"] == "site/a/available"
    assert occupancy["unique_id"] == "streamer_site_a_front_yard_person_occupancy"


# -- the camera file and the command line --------------------------------------------------------

CAMERA_FILE = """\
mqtt: {url: "mqtts://cam@broker.lan/home", password_file: secrets/mqtt, ca: ca.pem, discovery: false}
webhooks: [https://hooks.example/a, http://127.0.0.1:9000/b]
webhook_secret_file: secrets/hook
snapshots: snaps
clips: clips
pre_capture: 3
cameras:
  front: {source: rtsp://cam/1}
"""


def test_a_camera_file_names_the_event_outputs_relative_to_its_folder(tmp_path):
    from streamer.settings import load_camera_file

    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt").write_text("mqtt-pw\n")
    (tmp_path / "secrets" / "hook").write_text("hook-key\n")
    path = tmp_path / "cams.yaml"
    path.write_text(CAMERA_FILE)
    events = load_camera_file(path, env={}).events
    assert (events.mqtt.host, events.mqtt.tls, events.mqtt.username, events.mqtt.prefix) == \
        ("broker.lan", True, "cam", "home")
    assert events.mqtt.password == "mqtt-pw" and events.mqtt.ca == tmp_path / "ca.pem"
    assert events.mqtt.discovery is False
    assert events.webhooks.urls == ("https://hooks.example/a", "http://127.0.0.1:9000/b")
    assert events.webhooks.secret == b"hook-key"
    assert events.snapshots.folder == tmp_path / "snaps" and events.clips.folder == tmp_path / "clips"
    assert (events.clips.pre_capture, events.clips.post_capture) == (3.0, 5.0)
    path.write_text("mqtt: mqtt://u:pw@broker\ncameras:\n  front: {source: rtsp://cam/1}\n")
    with pytest.raises(SettingsError, match="cams.yaml: mqtt: no password in the URL"):
        load_camera_file(path, env={})
    path.write_text("pre_capture: 3\ncameras:\n  front: {source: rtsp://cam/1}\n")
    with pytest.raises(SettingsError, match="cams.yaml: pre_capture and .* need .*clips"):
        load_camera_file(path, env={})


@pytest.mark.parametrize("args,code,message", [
    (["--mqtt", "mqtt://u:hunter2@broker"], 2, "no password in the URL"),
    (["--mqtt", "mqtt://broker", "--no-track"], 2, "events follow tracked objects: drop --no-track"),
    (["--clips", ".", "--no-track"], 2, "events follow tracked objects: drop --no-track"),
    (["--pre-capture", "3"], 2, "need --clips"),
    (["--clips", "missing-folder"], 5, "--clips missing-folder: no such folder"),
    (["--snapshots", "missing-folder"], 5, "--snapshots missing-folder: no such folder"),
])
def test_bad_event_output_flags_fail_before_anything_starts(tmp_path, monkeypatch, args, code, message):
    from click.testing import CliRunner

    from streamer.cli import cli
    from tests.helpers import write_clip

    monkeypatch.chdir(tmp_path)
    write_clip(tmp_path / "v.mp4", 2)
    result = CliRunner().invoke(cli, ["run", "v.mp4", "--triton", "127.0.0.1:1", *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "hunter2" not in result.output


def test_the_fan_out_stamps_every_event_before_any_output_gets_it(tmp_path):
    """The snapshot output names its file first; an output earlier in the list gets the path too.
    An output whose stamp breaks is left out; the others go on."""
    from streamer.events.outputs import Fanout

    class Keep(QueuedOutput):
        def __init__(self):
            super().__init__("keep", 10, lambda m: None)
            self.got = []

        def publish(self, event):
            self.got.append(event)

    class BadStamp(Keep):
        def stamp(self, event):
            raise ValueError("bug")

    said, keep, bad = [], Keep(), BadStamp()
    snapshots = SnapshotOutput(SnapshotSettings(tmp_path), lambda m: None)
    fanout = Fanout([keep, bad, snapshots], said.append)
    with snapshots:
        for e in lifecycle(image=image()):
            fanout.publish(e)
    assert [Path(e.after.snapshot).parent for e in keep.got] == [tmp_path] * 3
    assert not bad.got and len(said) == 1 and "event output 2 failed" in said[0]
    assert fanout.frame_sinks("front", lossless=False) == []


def test_watch_takes_the_camera_files_outputs_and_the_flags_win(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from streamer.cli import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cams.yaml").write_text("clips: from-file\ncameras:\n  front: {source: rtsp://127.0.0.1:1/x}\n")
    result = CliRunner().invoke(cli, ["watch", "cams.yaml", "--triton", "127.0.0.1:1"])
    assert result.exit_code == 5 and "--clips from-file: no such folder" in result.output
    result = CliRunner().invoke(cli, ["watch", "cams.yaml", "--triton", "127.0.0.1:1", "--clips", "from-flag"])
    assert result.exit_code == 5 and "--clips from-flag: no such folder" in result.output


# -- what the queues hold ---------------------------------------------------------------------------

def alive_pictures(publish, count: int = 5, **kw):
    """Publish `count` new events, each with a picture of its own (as the events stage makes them),
    to an output that is not started (nothing drains its queue); which pictures are still alive."""
    import gc
    import weakref

    refs = []
    for i in range(count):
        picture = image()
        refs.append(weakref.ref(picture))
        publish(lifecycle(track_id=i + 1, image=picture, **kw)[0])
        del picture
    gc.collect()
    return [i for i, ref in enumerate(refs) if ref() is not None]


def test_outputs_that_send_no_picture_queue_events_without_it():
    """A webhook waiting for its receiver queues up to 1000 events: they must not hold the frames
    (1000 x 2.7 MB at 720p) of the events that carry a snapshot picture."""
    from streamer.events.destinations import WebhookSettings
    from streamer.events.webhook import WebhookOutput

    hook = WebhookOutput("http://127.0.0.1:1/x", WebhookSettings(("http://127.0.0.1:1/x",)), lambda m: None)
    assert alive_pictures(hook.publish) == []
    assert hook.status().dropped == 0  # all 5 queued, without their pictures


def test_mqtt_keeps_only_the_newest_snapshot_picture_per_camera_and_label():
    """MQTT's snapshot topic is retained (the newest per camera and label): while the broker is
    away the output keeps one picture per camera and label, not one per queued event."""
    from streamer.events.mqtt import MqttOutput

    out = MqttOutput(parse_mqtt_url("mqtt://127.0.0.1:1"), lambda m: None)  # never started: no connection
    assert alive_pictures(out.publish) == [4]
    assert alive_pictures(out.publish, label="car") == [4]
    assert out.status().dropped == 0
