"""Where events go besides the events log: frozen settings of MQTT, webhooks, snapshots and clips,
the fields of `settings.EventSettings`.

Built once from the flags (`--mqtt`, `--webhook`, `--snapshots`, `--clips` and their companions)
or from a camera file's keys of the same names (`event_settings`); a flag wins over the file. Secrets (the MQTT
password, the webhook signing secret) come from a file or the environment, never from a flag's
value, and are never printed: `repr` leaves them out and `MqttSettings.url` has no password.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ..settings import EventSettings, SettingsError

MQTT_PASSWORD_ENV = "STREAMER_MQTT_PASSWORD"
WEBHOOK_SECRET_ENV = "STREAMER_WEBHOOK_SECRET"
DEFAULT_PREFIX = "streamer"
DISCOVERY_PREFIX = "homeassistant"
DEFAULT_PRE_CAPTURE = 5.0
DEFAULT_POST_CAPTURE = 5.0
MAX_PRE_CAPTURE = 60.0  # the ring of encoded video per camera holds this much at most (plus one keyframe interval)


@dataclass(frozen=True)
class MqttSettings:
    """--mqtt mqtt[s]://[USER@]HOST[:PORT][/PREFIX]: the broker, the topic prefix, Home Assistant
    discovery (on unless --no-mqtt-discovery)."""

    host: str
    port: int
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    ca: Optional[Path] = None  # mqtts: the CA certificate file (None: the system's)
    discovery: bool = True

    @property
    def url(self) -> str:
        """The broker as it may be printed (no password, ever)."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}/{self.prefix}"


@dataclass(frozen=True)
class WebhookSettings:
    """--webhook URL (repeatable): each event's JSON POSTed to every URL; signed with HMAC-SHA256
    when a secret is given. timeout: seconds per attempt; give_up_s: how long one event is retried.
    repr masks the URLs and the secret."""

    urls: Tuple[str, ...]  # a path or query often holds a token: repr shows them masked
    secret: Optional[bytes] = field(default=None, repr=False)
    timeout: float = 5.0
    give_up_s: float = 30.0

    def __repr__(self) -> str:
        return (f"WebhookSettings(urls={tuple(mask_url(u) for u in self.urls)!r}, "
                f"secret={'***' if self.secret is not None else None}, timeout={self.timeout!r}, "
                f"give_up_s={self.give_up_s!r})")


@dataclass(frozen=True)
class SnapshotSettings:
    """--snapshots DIR: one JPEG per tracked object (its best frame, box drawn); crop: also a
    close-up of the box beside it (--snapshot-crop)."""

    folder: Path
    crop: bool = False


@dataclass(frozen=True)
class ClipSettings:
    """--clips DIR: one H.264 mp4 per group of overlapping events of a camera, from --pre-capture
    seconds before the first to --post-capture seconds after the last."""

    folder: Path
    pre_capture: float = DEFAULT_PRE_CAPTURE
    post_capture: float = DEFAULT_POST_CAPTURE

    def __post_init__(self):
        if not 0 <= self.pre_capture <= MAX_PRE_CAPTURE:
            raise SettingsError(f"--pre-capture must be between 0 and {MAX_PRE_CAPTURE:g} seconds "
                                f"(got {self.pre_capture:g})")
        if self.post_capture < 0:
            raise SettingsError(f"--post-capture must be 0 or more seconds (got {self.post_capture:g})")


# -- parsing ------------------------------------------------------------------------------------

_TOPIC_LEVEL = re.compile(r"^[^+#/\x00]+$")


def parse_mqtt_url(text: str, where: str = "--mqtt") -> MqttSettings:
    """mqtt://[USER@]HOST[:PORT][/PREFIX] or mqtts://... (ports 1883 / 8883 by default). A password
    in the URL is refused: it would show in `ps` and in logs."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as err:
        raise SettingsError(f"{where}: {err}") from err
    if parts.scheme not in ("mqtt", "mqtts"):
        raise SettingsError(f"{where}: give mqtt://[USER@]HOST[:PORT][/PREFIX] or mqtts://... "
                            f"(got a {parts.scheme or 'missing'} scheme)")
    if parts.password is not None:
        raise SettingsError(f"{where}: no password in the URL (it would show in process lists and logs); "
                            f"put it in --mqtt-password-file or ${MQTT_PASSWORD_ENV}")
    if not parts.hostname:
        raise SettingsError(f"{where}: the broker's host name is missing")
    if parts.query or parts.fragment:
        raise SettingsError(f"{where}: no ?query or #fragment in an MQTT URL")
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if not all(_TOPIC_LEVEL.match(level) for level in prefix.split("/")):
        raise SettingsError(f"{where}: the topic prefix {prefix!r} may not hold '+', '#' or empty levels")
    tls = parts.scheme == "mqtts"
    return MqttSettings(host=parts.hostname, port=port or (8883 if tls else 1883), tls=tls,
                        username=unquote(parts.username) if parts.username else None, prefix=prefix)


def read_secret(path: Optional[Path], env_name: str, what: str, env: Mapping[str, str]) -> Optional[str]:
    """A secret from a file (its first line), else from the environment; None when neither."""
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise SettingsError(f"cannot read the {what} file {path} ({err.strerror})") from err
        if not lines or not lines[0]:
            raise SettingsError(f"the {what} file {path} is empty")
        return lines[0]
    value = env.get(env_name)
    return value or None


_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")  # whitespace and control characters: urllib refuses them


def check_webhook_url(url: str, where: str = "--webhook") -> str:
    """An http(s) URL urllib can send; errors show it masked (its path may hold a token)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as err:
        raise SettingsError(f"{where}: not a valid URL (got {mask_url(url)})") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{where}: give an http:// or https:// URL (got {mask_url(url)})")
    if _UNSENDABLE.search(url):
        raise SettingsError(f"{where}: a URL may not hold spaces or control characters; encode them (%20) "
                            f"(got {mask_url(url)})")
    return url


def mask_url(url: str) -> str:
    """A webhook URL as it may be printed: scheme, host and port (a path or query often holds a token)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    if not parts.hostname:
        return "(invalid URL)"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}/" + ("***" if parts.path.strip("/") or parts.query else "")


def event_settings(mqtt: Optional[str] = None, mqtt_password_file: Optional[Path] = None,
                  mqtt_ca: Optional[Path] = None, mqtt_discovery: Optional[bool] = None,
                  webhooks: Tuple[str, ...] = (), webhook_secret_file: Optional[Path] = None,
                  snapshots: Optional[Path] = None, snapshot_crop: Optional[bool] = None,
                  clips: Optional[Path] = None, pre_capture: Optional[float] = None,
                  post_capture: Optional[float] = None, env: Optional[Mapping[str, str]] = None,
                  where: str = "", jsonl: Optional[Path] = None) -> EventSettings:
    """The event outputs from flag (or camera-file: `where` names it) values; None: not given.
    Companions without their output (--pre-capture without --clips...) are an error naming both."""
    env = os.environ if env is None else env
    at = (lambda key: f"{where}{key}") if where else (lambda key: "--" + key.replace("_", "-"))
    if mqtt is None and (mqtt_password_file is not None or mqtt_ca is not None):
        raise SettingsError(f"{at('mqtt_password_file')} and {at('mqtt_ca')} need {at('mqtt')}")
    if not webhooks and webhook_secret_file is not None:
        raise SettingsError(f"{at('webhook_secret_file')} needs {at('webhook' if not where else 'webhooks')}")
    if snapshots is None and snapshot_crop:
        raise SettingsError(f"{at('snapshot_crop')} needs {at('snapshots')}")
    if clips is None and (pre_capture is not None or post_capture is not None):
        raise SettingsError(f"{at('pre_capture')} and {at('post_capture')} need {at('clips')}")
    found = EventSettings(jsonl=jsonl)
    if mqtt is not None:
        broker = parse_mqtt_url(mqtt, at("mqtt"))
        if mqtt_ca is not None and not broker.tls:
            raise SettingsError(f"{at('mqtt_ca')} is for mqtts:// (TLS); {at('mqtt')} is plain mqtt://")
        password = read_secret(mqtt_password_file, MQTT_PASSWORD_ENV, "MQTT password", env)
        found = replace(found, mqtt=replace(broker, password=password, ca=mqtt_ca,
                                            discovery=True if mqtt_discovery is None else mqtt_discovery))
    if webhooks:
        urls = tuple(check_webhook_url(url, at("webhook" if not where else "webhooks")) for url in webhooks)
        secret = read_secret(webhook_secret_file, WEBHOOK_SECRET_ENV, "webhook secret", env)
        found = replace(found, webhooks=WebhookSettings(urls, None if secret is None else secret.encode("utf-8")))
    if snapshots is not None:
        found = replace(found, snapshots=SnapshotSettings(Path(snapshots), crop=bool(snapshot_crop)))
    if clips is not None:
        found = replace(found, clips=ClipSettings(
            Path(clips), DEFAULT_PRE_CAPTURE if pre_capture is None else pre_capture,
            DEFAULT_POST_CAPTURE if post_capture is None else post_capture))
    return found


def over(flags: EventSettings, file: EventSettings) -> EventSettings:
    """`watch`: each output given as a flag wins over the camera file's."""
    return replace(flags, **{name: getattr(flags, name) if getattr(flags, name) is not None else getattr(file, name)
                             for name in ("mqtt", "webhooks", "snapshots", "clips")})


def check_folders(events: EventSettings) -> None:
    """Fail before anything starts (exit 5) on an output folder that is missing or not writable."""
    from ..errors import SinkError

    for option, folder in events.folders:
        if not folder.is_dir():
            raise SinkError(f"{option} {folder}: no such folder (create it first)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SinkError(f"{option} {folder}: the folder is not writable")
