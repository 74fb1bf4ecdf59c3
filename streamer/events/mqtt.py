"""MQTT: events, retained counts and snapshots to a broker, with Home Assistant discovery.

    PREFIX/available                  online (retained, at every connect) / offline (last will, clean stop)
    PREFIX/events                     one JSON message per event: {"type", "before", "after", ...} (QoS 1)
    PREFIX/CAMERA/LINE/LABEL          retained {"in": N, "out": N}           (a counting line)
    PREFIX/CAMERA/ZONE/LABEL          retained {"inside": N, "entered": N, "max_inside": N}
    PREFIX/CAMERA/LABEL/snapshot      retained JPEG of the newest best snapshot (box drawn)
    homeassistant/{sensor,binary_sensor}/streamer_PREFIX_CAMERA/OBJECT/config   retained discovery

The paho client keeps the connection on its own thread (reconnecting with backoff: a broker down
at start or gone mid-run is retried while the run goes on); this output's thread publishes from
its bounded queue only while connected, so what waits for the broker is at most the queue.
Retained counts are coalesced (the newest per camera) and published again, with availability and
discovery, at every connect (a restarted broker may have lost them). Snapshot pictures are kept
out of the event queue and coalesced too (the newest per camera and label: the retained topic
shows no other), so a broker that is away holds at most one frame per camera and label. A broker that refuses the
credentials is final: `EventOutputError` (exit 4) when it happens at start, the output given up
when it happens later.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from typing import Dict, Iterator, Optional, Tuple

from ..errors import EventOutputError
from .destinations import DISCOVERY_PREFIX, MQTT_PASSWORD_ENV, MqttSettings
from .queued import QueuedOutput, Say
from .snapshots import safe, snapshot_jpeg
from .types import Counts, Event, OutputState

QUEUE = 1000  # events waiting for the broker
CONNECT_WAIT = 10.0  # seconds at start to learn whether the broker takes the credentials
BACKOFF = (0.5, 10.0)  # paho's reconnect delay: first, most
KEEPALIVE = 30
# CONNACK reason codes that retrying cannot fix (MQTT 5 numbering; paho maps 3.1.1's onto them):
# client id rejected, bad user name or password, not authorized, banned, bad authentication method.
FINAL = {133: "client id rejected", 134: "bad user name or password",
         135: "not authorized (a wrong user or password, or no access for this user)", 138: "banned",
         140: "bad authentication method"}


def topic_level(name: str) -> str:
    """A camera, zone, line or label name as one topic level (no '/', '+', '#')."""
    return name.replace("/", "_").replace("+", "_").replace("#", "_") or "_"


def count_topics(prefix: str, counts: Counts) -> Iterator[Tuple[str, str, str, str, dict]]:
    """(kind "line"|"zone", name, label, topic, payload) for every count of a camera."""
    cam = topic_level(counts.camera)
    for line, directions in counts.lines.items():
        labels = sorted({label for per in directions.values() for label in per})
        for label in labels:
            payload = {d: int(directions.get(d, {}).get(label, 0)) for d in ("in", "out")}
            yield "line", line, label, f"{prefix}/{cam}/{topic_level(line)}/{topic_level(label)}", payload
    for zone, kinds in counts.zones.items():
        labels = sorted({label for per in kinds.values() for label in per})
        for label in labels:
            payload = {k: int(kinds.get(k, {}).get(label, 0)) for k in ("inside", "entered", "max_inside")}
            yield "zone", zone, label, f"{prefix}/{cam}/{topic_level(zone)}/{topic_level(label)}", payload


def discovery(settings: MqttSettings, camera: str, kind: str, name: str, label: str,
              state_topic: str) -> Iterator[Tuple[str, dict]]:
    """Home Assistant MQTT discovery: (config topic, config) of the entities of one count.
    A line: two sensors (in, out); a zone: an occupancy sensor and an occupied binary sensor.
    Every entity of a camera belongs to one device; all follow PREFIX/available."""
    node = safe(f"streamer_{settings.prefix}_{camera}").replace(".", "_")
    device = {"identifiers": [node], "name": f"{camera} (streamer)", "manufacturer": "streamer",
              "model": "object detection"}
    base = {"state_topic": state_topic, "availability_topic": f"{settings.prefix}/available",
            "payload_available": "online", "payload_not_available": "offline", "device": device}
    obj = safe(f"{name}_{label}").replace(".", "_")
    if kind == "line":
        for direction in ("in", "out"):
            yield f"{DISCOVERY_PREFIX}/sensor/{node}/{obj}_{direction}/config", dict(
                base, name=f"{name} {label} {direction}", unique_id=f"{node}_{obj}_{direction}",
                value_template=f"{{{{ value_json['{direction}'] }}}}", state_class="total_increasing",
                unit_of_measurement=label, icon="mdi:counter")
    else:
        yield f"{DISCOVERY_PREFIX}/sensor/{node}/{obj}_count/config", dict(
            base, name=f"{name} {label} count", unique_id=f"{node}_{obj}_count",
            value_template="{{ value_json['inside'] }}", state_class="measurement", unit_of_measurement=label)
        yield f"{DISCOVERY_PREFIX}/binary_sensor/{node}/{obj}_occupancy/config", dict(
            base, name=f"{name} {label} occupancy", unique_id=f"{node}_{obj}_occupancy",
            value_template="{{ 'ON' if value_json['inside'] > 0 else 'OFF' }}", device_class="occupancy")


class MqttOutput(QueuedOutput):
    """--mqtt: the EventOutput that talks to an MQTT broker (paho-mqtt)."""

    def __init__(self, settings: MqttSettings, log: Say, capacity: int = QUEUE,
                 connect_wait: float = CONNECT_WAIT, backoff: Tuple[float, float] = BACKOFF):
        super().__init__(f"mqtt {settings.url}", capacity, log)
        self.settings = settings
        self.prefix = settings.prefix
        self.connect_wait = connect_wait
        self.backoff = backoff
        self._connected = threading.Event()
        self._first = threading.Event()  # the first attempt's outcome is known
        self._final: Optional[str] = None  # why the broker refused us for good
        self._resync = False  # connected again: availability, discovery and counts go out again
        self._counts: Dict[str, Counts] = {}  # the newest counts per camera, not yet published
        self._snapshots: Dict[Tuple[str, str], Event] = {}  # (camera, label) -> the newest picture, not yet sent
        self._published: Dict[str, str] = {}  # retained count topic -> payload last published
        self._announced: set = set()  # discovery topics published since the last connect
        self._all_counts: Dict[str, Counts] = {}  # the newest counts per camera (for a resync)
        self._event_mids: set = set()  # QoS 1 events sent, awaiting their PUBACK (the output's thread only)
        self._acked: set = set()  # PUBACKs received (paho's thread adds, the output's thread takes)
        self._ack_lock = threading.Lock()  # never held while calling paho (paho holds its own locks in callbacks)
        self._lock = threading.Lock()  # the pending counts (the video path and the output's thread)
        self._client = self._make_client()
        self.connects = 0

    def _make_client(self):
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamer-{uuid.uuid4().hex[:12]}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if self.settings.username:
            client.username_pw_set(self.settings.username, self.settings.password)
        elif self.settings.password:
            client.username_pw_set("", self.settings.password)
        if self.settings.tls:
            client.tls_set(ca_certs=str(self.settings.ca) if self.settings.ca else None,
                           cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(f"{self.prefix}/available", "offline", qos=1, retain=True)
        client.reconnect_delay_set(*self.backoff)
        client.max_queued_messages_set(self.capacity + 100)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # -- paho's thread -------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            code = int(reason_code.value)
            if code in FINAL:
                self._final = FINAL[code]
                self.set_state(OutputState.GIVEN_UP, f"the broker refused: {FINAL[code]}")
                client.disconnect()
            else:
                self.set_state(OutputState.RETRYING, f"the broker refused: {reason_code}")
            self._first.set()
            return
        self.connects += 1
        self._resync = True
        self._connected.set()
        self.set_state(OutputState.CONNECTED)
        self._first.set()

    def _on_connect_fail(self, client, userdata) -> None:
        reason = "broker not reachable" + (" or TLS failed (is --mqtt-ca the CA that signed it?)"
                                           if self.settings.tls else "")
        self.set_state(OutputState.RETRYING, reason)
        self._first.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if self._final is None and not self.closing:
            self.set_state(OutputState.RETRYING, "connection lost")
        self.wake()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._ack_lock:
            self._acked.add(mid)

    def on_state(self, state: OutputState, reason: Optional[str]) -> None:
        if state is OutputState.CONNECTED:
            self.say(f"{self.name}: connected")
        elif state is OutputState.RETRYING and self._first.is_set():
            self.say(f"WARNING: {self.name}: {reason}; retrying with backoff (events wait, up to {self.capacity})")
        elif state is OutputState.GIVEN_UP and self._first.is_set():
            self.say(f"ERROR: {self.name}: {reason}; no more events go to it")

    # -- the video path ----------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """The event to the queue without its picture; the picture replaces the camera's and
        label's previous one not yet sent (the snapshot topic is retained: only the newest counts)."""
        if event.image is not None:
            with self._lock:
                self._snapshots[(event.camera, event.after.label)] = event
        super().publish(event)

    def counts(self, counts: Counts) -> None:
        with self._lock:
            self._counts[counts.camera] = counts
        self.wake()

    # -- start and stop (the runner's thread) ------------------------------------------------
    def start(self) -> "MqttOutput":
        """Connect (paho's thread) and wait up to `connect_wait` s to learn how it went: a broker
        that refuses the credentials is an error now (exit 4); one not reachable is retried."""
        client = self._client
        client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE)
        client.loop_start()
        self._first.wait(self.connect_wait)
        if self._final is not None:
            client.loop_stop()
            hint = ("check the user in --mqtt and the password (--mqtt-password-file or "
                    f"${MQTT_PASSWORD_ENV})") if self._final != "client id rejected" else "check the broker's ACL"
            raise EventOutputError(f"MQTT broker {self.settings.url} refused the connection: {self._final}; {hint}")
        if not self._connected.is_set():
            reason = self.status().reason or "no answer"
            self.say(f"WARNING: {self.name}: {reason}; retrying in the background while the run goes on "
                     f"(events wait, up to {self.capacity})")
        return super().start()

    def ready(self) -> bool:
        return self._connected.is_set() and self._final is None

    # -- the output's thread -------------------------------------------------------------------
    def _send(self, topic: str, payload, qos: int = 1, retain: bool = False):
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def handle(self, event: Event) -> None:
        import paho.mqtt.client as mqtt

        info = self._send(f"{self.prefix}/events", json.dumps(event.to_json()))
        # NO_CONN: the connection dropped since ready(); paho keeps a QoS 1 message and sends it on reconnect
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.count(failed=1)
            return
        self._event_mids.add(info.mid)

    def _count_acks(self) -> None:
        with self._ack_lock:
            acked, self._acked = self._acked, set()
        done = acked & self._event_mids
        self._event_mids -= done
        if done:
            self.count(sent=len(done))

    def idle(self) -> None:
        self._count_acks()
        if not self.ready():
            return
        if self._resync:
            self._resync = False
            self._announced.clear()
            self._published.clear()
            self._send(f"{self.prefix}/available", "online", retain=True)
            with self._lock:
                for camera, counts in self._all_counts.items():
                    self._counts.setdefault(camera, counts)
        with self._lock:
            pending, self._counts = self._counts, {}
            self._all_counts.update(pending)
            snapshots, self._snapshots = self._snapshots, {}
        for counts in pending.values():
            self._publish_counts(counts)
        for (camera, label), event in snapshots.items():
            self._send(f"{self.prefix}/{topic_level(camera)}/{topic_level(label)}/snapshot", snapshot_jpeg(event),
                       retain=True)

    def _publish_counts(self, counts: Counts) -> None:
        for kind, name, label, topic, payload in count_topics(self.prefix, counts):
            if self.settings.discovery:
                for config_topic, config in discovery(self.settings, counts.camera, kind, name, label, topic):
                    if config_topic not in self._announced:
                        self._send(config_topic, json.dumps(config), retain=True)
                        self._announced.add(config_topic)
            text = json.dumps(payload)
            if self._published.get(topic) != text:
                self._send(topic, text, retain=True)
                self._published[topic] = text

    def end(self) -> None:
        """A clean stop: `offline` (retained), then disconnect; the last will is not sent."""
        client = self._client
        if self.ready():
            self.idle()  # the final counts
            try:
                client.publish(f"{self.prefix}/available", "offline", qos=1, retain=True).wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
            deadline = time.monotonic() + 2.0
            while self._event_mids and time.monotonic() < deadline:  # the last events' PUBACKs
                time.sleep(0.02)
                self._count_acks()
        if self._event_mids:
            self.count(failed=len(self._event_mids))
            self._event_mids.clear()
        client.disconnect()
        client.loop_stop()
