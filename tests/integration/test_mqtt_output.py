"""MqttOutput against a real Mosquitto (started by the test on a free loopback port) and a paho
subscriber: topics, payloads, retained counts, Home Assistant discovery, availability and the
last will, a broker that goes away and comes back, a wrong password. No Triton here: the events
are synthetic values (tests/event_values.py), as the events stage makes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from streamer.errors import EventOutputError, ExitCode
from streamer.events import OutputState
from streamer.events.destinations import parse_mqtt_url
from streamer.events.mqtt import MqttOutput
from tests.event_values import counts, image, lifecycle
from tests.helpers import wait_until
from tests.mosquitto import Broker, Subscriber, make_certificates


def settings(port: int, prefix: str = "streamer", user: str = "", password=None, discovery: bool = True):
    from dataclasses import replace

    url = f"mqtt://{user + '@' if user else ''}127.0.0.1:{port}/{prefix}"
    return replace(parse_mqtt_url(url), password=password, discovery=discovery)


def events_of(sub: Subscriber, prefix: str = "streamer"):
    return [json.loads(m.text) for m in sub.on(f"{prefix}/events")]


def test_events_counts_snapshot_discovery_and_clean_stop(tmp_path):
    said = []
    with Broker(tmp_path) as broker, Subscriber(broker.port, "#") as sub:
        out = MqttOutput(settings(broker.port), said.append)
        with out:
            assert out.status().state is OutputState.CONNECTED
            for event in lifecycle(track_id=1, image=image()) + lifecycle(track_id=2, first=5, last=20):
                out.publish(event)
            out.counts(counts(door_in=1))
            out.counts(counts(door_in=2, door_out=1, inside=1))  # coalesced: the newest counts win
            sub.wait_for(lambda m: len([x for x in m if x.topic == "streamer/events"]) == 6, 10, "6 events")
            wait_until(lambda: out.status().sent == 6, 5, what="6 PUBACKs counted")
        got = events_of(sub)
        assert [(e["type"], e["after"]["track_id"]) for e in got] == [
            ("new", 1), ("update", 1), ("end", 1), ("new", 2), ("update", 2), ("end", 2)]
        assert got[0]["before"] is None and got[1]["before"]["current_zones"] == []
        assert got[1]["after"]["current_zones"] == ["yard"] and got[2]["after"]["end_time"] == pytest.approx(0.4)
        # the retained counts: the newest values, one message per topic and label
        sub.wait_for(lambda m: any(x.topic == "streamer/available" and x.text == "offline" for x in m), 5, "offline")
        door = sub.on("streamer/front/door/person")
        assert json.loads(door[-1].text) == {"in": 2, "out": 1}
        assert json.loads(sub.on("streamer/front/yard/person")[-1].text) == {"inside": 1, "entered": 2,
                                                                            "max_inside": 1}
        # the snapshot: a JPEG of the first object's image with its box drawn
        jpeg = sub.on("streamer/front/person/snapshot")
        assert len(jpeg) == 1
        picture = cv2.imdecode(np.frombuffer(jpeg[0].payload, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (150, 200, 3)
        # Home Assistant discovery: sensors for the line, a count and an occupancy for the zone, one device
        configs = {m.topic: json.loads(m.text) for m in sub.snapshot() if m.topic.startswith("homeassistant/")}
        assert set(configs) == {
            "homeassistant/sensor/streamer_streamer_front/door_person_in/config",
            "homeassistant/sensor/streamer_streamer_front/door_person_out/config",
            "homeassistant/sensor/streamer_streamer_front/yard_person_count/config",
            "homeassistant/binary_sensor/streamer_streamer_front/yard_person_occupancy/config"}
        for config in configs.values():
            assert config["availability_topic"] == "streamer/available"
            assert config["device"]["identifiers"] == ["streamer_streamer_front"]
        assert configs["homeassistant/sensor/streamer_streamer_front/door_person_in/config"]["state_topic"] == \
            "streamer/front/door/person"
        # availability: online at connect, offline at the clean stop (both retained)
        assert [m.text for m in sub.on("streamer/available")] == ["online", "offline"]
        # a new subscriber gets the retained values
        with Subscriber(broker.port, "streamer/#") as late:
            late.wait_for(lambda m: any(x.topic == "streamer/front/door/person" for x in m), 5, "retained counts")
            assert [m.text for m in late.on("streamer/available")] == ["offline"]
            assert all(m.retain for m in late.snapshot())
    status = out.status()
    assert (status.state, status.sent, status.dropped, status.failed) == (OutputState.CLOSED, 6, 0, 0)


def test_no_discovery(tmp_path):
    with Broker(tmp_path) as broker, Subscriber(broker.port, "#") as sub:
        with MqttOutput(settings(broker.port, prefix="home/cams", discovery=False), lambda m: None) as out:
            out.counts(counts())
            sub.wait_for(lambda m: any(x.topic == "home/cams/front/door/person" for x in m), 5, "counts")
        assert not [m for m in sub.snapshot() if m.topic.startswith("homeassistant/")]


def test_broker_down_at_start_then_away_mid_run(tmp_path):
    """Down at start: the output waits (retrying), the events wait in its queue; the broker comes up:
    they arrive in order. The broker goes away mid-run: events keep queueing without blocking the
    caller; it comes back: they arrive, and the retained values are there again."""
    said = []
    broker = Broker(tmp_path, persistent=True)  # the subscriber's session outlives the restart
    out = MqttOutput(settings(broker.port), said.append, connect_wait=1.0, backoff=(0.1, 0.5))
    with out:
        assert out.status().state is OutputState.RETRYING
        assert any("retrying in the background" in line for line in said)
        first = lifecycle(track_id=1, image=image())
        for event in first:
            out.publish(event)
        broker.start()
        try:
            with Subscriber(broker.port, "streamer/#", persistent=True) as sub:
                sub.wait_for(lambda m: len([x for x in m if x.topic == "streamer/events"]) == 3, 15, "queued events")
                sub.wait_for(lambda m: any(x.topic == "streamer/front/person/snapshot" for x in m), 10,
                             "the snapshot kept while the broker was down")
                broker.stop()
                wait_until(lambda: out.status().state is OutputState.RETRYING, 10, what="retrying")
                second = lifecycle(track_id=2)
                for event in second:
                    out.publish(event)  # never blocks
                out.counts(counts())
                broker.start()
                sub.wait_for(lambda m: len([x for x in m if x.topic == "streamer/events"]) >= 6, 20,
                             "the events queued while the broker was away")
                ids = [e["after"]["track_id"] for e in events_of(sub)]
                firsts = list(dict.fromkeys((e["type"], e["after"]["track_id"]) for e in events_of(sub)))
                assert firsts == [(k, t) for t in (1, 2) for k in ("new", "update", "end")], ids
                sub.wait_for(lambda m: any(x.topic == "streamer/front/door/person" for x in m), 10, "counts again")
                sub.wait_for(lambda m: any(x.topic == "streamer/available" and x.text == "online" for x in m), 10,
                             "online again")
        finally:
            broker.stop()
    assert out.status().sent >= 6 and out.status().dropped == 0


def test_queue_overflow_is_dropped_counted_and_said_once(tmp_path):
    said = []
    broker = Broker(tmp_path)  # never started
    with MqttOutput(settings(broker.port), said.append, capacity=4, connect_wait=0.5) as out:
        out.drain_s = 0.2  # nothing will drain: no broker
        for event in lifecycle() * 3:  # 9 events, room for 4
            out.publish(event)
        assert out.status().dropped == 5
        assert len([line for line in said if "is full" in line]) == 1
    assert out.status().failed == 4  # still queued when it closed


def test_wrong_password_is_final(tmp_path):
    with Broker(tmp_path, users={"cam": "right"}) as broker:
        out = MqttOutput(settings(broker.port, user="cam", password="Pa55-not-this"), lambda m: None)
        with pytest.raises(EventOutputError) as err:
            out.start()
        assert "bad user name or password" in str(err.value) or "not authorized" in str(err.value)
        assert "Pa55-not-this" not in str(err.value) and err.value.exit_code == ExitCode.INFERENCE == 4
        with Subscriber(broker.port, "#", "cam", "right") as sub, \
                MqttOutput(settings(broker.port, user="cam", password="right"), lambda m: None) as good:
            good.publish(lifecycle()[0])
            sub.wait_for(lambda m: any(x.topic == "streamer/events" for x in m), 5, "an event with the right password")


def test_last_will_after_sigkill(tmp_path):
    """A process holding an MqttOutput is SIGKILLed: the broker sends its last will, `offline`."""
    with Broker(tmp_path) as broker, Subscriber(broker.port, "streamer/available") as sub:
        script = textwrap.dedent(f"""
            import sys, time
            from streamer.events.destinations import parse_mqtt_url
            from streamer.events.mqtt import MqttOutput
            out = MqttOutput(parse_mqtt_url("mqtt://127.0.0.1:{broker.port}"), print).start()
            print("READY", flush=True)
            time.sleep(60)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            sub.wait_for(lambda m: [x.text for x in m] == ["online"], 15, "online")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            sub.wait_for(lambda m: [x.text for x in m] == ["online", "offline"], 60, "the last will")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_mqtts_with_the_ca_that_signed_the_broker(tmp_path):
    """mqtts:// with --mqtt-ca: connected, events delivered. Without the CA (the system's CAs do not
    know this one) the TLS handshake fails: retried like an unreachable broker, the run goes on."""
    from dataclasses import replace

    certificates = make_certificates(tmp_path)
    with Broker(tmp_path, tls=certificates) as broker, Subscriber(broker.port, "secure/#") as sub:
        url = f"mqtts://127.0.0.1:{broker.tls_port}/secure"
        with MqttOutput(replace(parse_mqtt_url(url), ca=certificates["cafile"]), lambda m: None) as out:
            assert out.status().state is OutputState.CONNECTED
            out.publish(lifecycle()[0])
            sub.wait_for(lambda m: any(x.topic == "secure/events" for x in m), 10, "an event over TLS")
        said = []
        with MqttOutput(parse_mqtt_url(url), said.append, connect_wait=3.0) as untrusted:
            status = untrusted.status()
            assert status.state is OutputState.RETRYING and "TLS" in status.reason


def test_the_command_with_a_wrong_password_exits_4_with_one_line_before_any_server(tmp_path):
    """`streamer run` with a password the broker refuses: one line, exit 4, no traceback, the password
    never printed, and before Triton is asked anything (nothing listens at --triton here)."""
    from tests.helpers import streamer, write_clip

    video = write_clip(tmp_path / "v.mp4", 3)
    secret = tmp_path / "pw"
    secret.write_text("Pa55-not-this\n")
    with Broker(tmp_path, users={"cam": "right"}) as broker:
        result = streamer("run", video, "--triton", "127.0.0.1:1", "--mqtt", f"mqtt://cam@127.0.0.1:{broker.port}",
                          "--mqtt-password-file", secret, timeout=120)
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "refused the connection" in errors[0] and "password" in errors[0]  # mosquitto says: not authorized
    assert "Pa55-not-this" not in result.stderr + result.stdout
