"""A real MQTT broker for tests: Debian's mosquitto on a free loopback port, its own config file,
stopped by PID; and a paho subscriber that records what arrives.

    with Broker(tmp_path) as broker:           # anonymous; Broker(tmp_path, users={"cam": "pw"})
        with Subscriber(broker.port, "streamer/#") as sub:
            ...
            sub.wait_for(lambda msgs: any(m.topic == "streamer/available" for m in msgs), 10)

`broker.stop()` / `broker.start()` take it away and bring it back on the same port. Without
`persistent` the retained messages and sessions are lost with it (a broker restarted from scratch);
with it they are saved at the stop and read back (a subscriber with `persistent=True` then gets the
QoS 1 messages published while it was reconnecting).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from streamer.server import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def make_certificates(folder: Path) -> dict:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl): {"cafile", "certfile", "keyfile"}."""
    folder = Path(folder)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=streamer test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return {"cafile": folder / "ca.crt", "certfile": folder / "server.crt", "keyfile": folder / "server.key"}


class Broker:
    def __init__(self, folder: Path, users: Optional[Dict[str, str]] = None, tls: Optional[dict] = None,
                 persistent: bool = False):
        """users: name -> password (then anonymous clients are refused); tls: {"cafile", "certfile",
        "keyfile"}: a second listener, mqtts on `tls_port` (the plain one stays, for the test's subscriber)."""
        self.folder = Path(folder)
        self.users = users
        self.tls = tls
        self.persistent = persistent
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.process: Optional[subprocess.Popen] = None
        self.log = self.folder / "mosquitto.log"

    def _config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "log_dest stderr", "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")  # started as root, mosquitto would become `mosquitto`: no access to tmp_path
        if self.persistent:
            lines += ["persistence true", f"persistence_location {self.folder}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        if self.users:
            passwords = self.folder / "passwd"
            passwords.unlink(missing_ok=True)
            for i, (user, password) in enumerate(self.users.items()):
                args = ["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(passwords), user, password]
                subprocess.run(args, check=True, capture_output=True)
            os.chmod(passwords, 0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.tls['cafile']}",
                      f"certfile {self.tls['certfile']}", f"keyfile {self.tls['keyfile']}"]
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> "Broker":
        if not os.path.exists(MOSQUITTO):
            raise AssertionError("mosquitto is missing: apt-get install mosquitto mosquitto-clients (.ci/run does)")
        for _ in range(3):
            config = self._config()
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if port_open(self.port):
                    return self
                time.sleep(0.05)
            self.stop()
            self.port = free_port()  # taken meanwhile, most likely: another port
        raise RuntimeError(f"mosquitto did not start; its log: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


class Subscriber:
    """A paho client subscribed to `topic` that keeps every message it gets (in order)."""

    def __init__(self, port: int, topic: str = "#", username: Optional[str] = None, password: Optional[str] = None,
                 persistent: bool = False):
        """persistent: a session the broker keeps while this client is away (QoS 1 messages wait for it)."""
        import paho.mqtt.client as mqtt

        self.port = port
        self.topic = topic
        self.messages: List[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}-{id(self)}",
                                  clean_session=not persistent)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))

    def snapshot(self) -> List[Message]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> List[Message]:
        return [m for m in self.snapshot() if m.topic == topic]

    def wait_for(self, predicate: Callable[[List[Message]], bool], timeout: float, what: str = "messages") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return
            time.sleep(0.05)
        topics = sorted({m.topic for m in self.snapshot()})
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; topics seen: {topics}")

    def __enter__(self) -> "Subscriber":
        self.client.connect_async("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")
        return self

    def __exit__(self, *exc) -> None:
        self.client.disconnect()
        self.client.loop_stop()
