"""Run settings: frozen values built once from flags or a camera file, validated once.

Nothing below this module sees click or YAML. `load_camera_file` reads a camera file
(YAML, `${VAR}` taken from the environment), validates it with pydantic and turns every
problem into one line naming the camera and the field (`cameras.front.threshold: ...`).
Paths in a camera file are relative to the file's folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple, Union

from .errors import ExitCode, StreamerError
from .recording.retention import Retention, parse_retention
from .states import InferOn, SourceKind, Transport

if TYPE_CHECKING:
    from .events.config import Regions
    from .events.destinations import ClipSettings, MqttSettings, SnapshotSettings, WebhookSettings
    from .triton.targets import Target


class SettingsError(StreamerError):
    """Bad flags or a bad camera file: one line naming the field; exit 2 (usage)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CaptureSettings:
    """How live sources are opened, watched and reconnected."""

    open_timeout: float = 10.0  # seconds to connect and get the stream's header
    stall_timeout: float = 5.0  # seconds without data before the stream counts as dropped
    rtsp_transport: str = "tcp"
    max_reconnect_time: float = 300.0  # seconds offline before giving up
    backoff_initial: float = 0.5
    backoff_max: float = 8.0


@dataclass(frozen=True)
class ServerSettings:
    """Where inference happens: a running Triton (`triton`), or the embedded one."""

    triton: Optional[Tuple["Target", ...]] = None  # --triton, parsed once; None: start the embedded server
    model_repo: Path = Path("model_repository")
    threads: int = 0
    startup_timeout: float = 180.0
    model: Optional[str] = None  # None: fasterrcnn_u8 when served, else the seed's fasterrcnn
    transport: Transport = Transport.AUTO  # how frames reach Triton
    metrics_port: Optional[int] = None  # the embedded Triton's own metrics port (None: a free one)
    dns_refresh: float = 30.0  # --dns-refresh: seconds between lookups of a dns:/// name (new replicas join)

    def __post_init__(self):
        if not self.dns_refresh > 0:
            raise SettingsError(f"--dns-refresh must be more than 0 seconds (got {self.dns_refresh:g})")


DEFAULT_DNS_REFRESH = ServerSettings.dns_refresh


@dataclass(frozen=True)
class MetricsSettings:
    """The pipeline's Prometheus endpoint."""

    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class WebSettings:
    """--web: the browser live view (streamer.web.WebDisplay)."""

    host: str
    port: int
    token: Optional[str] = field(default=None, repr=False)  # from --web-token-file or STREAMER_WEB_TOKEN
    allowed_hosts: Tuple[str, ...] = ()
    max_viewers: int = 8


def web_settings(bind: Optional[str], token_file: Optional[Path], allowed_hosts: Optional[str],
                 max_viewers: int, where: str = "--web") -> Optional[WebSettings]:
    """--web [HOST:]PORT and its companions; None when the page is not asked for. The token comes
    from the file, else from $STREAMER_WEB_TOKEN (never from a flag's value)."""
    if bind is None:
        if token_file is not None or allowed_hosts:
            raise SettingsError("--web-token-file and --web-allowed-hosts need --web [HOST:]PORT")
        return None
    from .web import load_token, parse_bind

    try:
        host, port = parse_bind(str(bind))
    except ValueError as err:
        raise SettingsError(f"{where}: {err}") from err
    hosts = tuple(h.strip() for h in (allowed_hosts or "").split(",") if h.strip())
    return WebSettings(host=host, port=port, token=load_token(token_file), allowed_hosts=hosts,
                       max_viewers=max_viewers)


@dataclass(frozen=True)
class Selection:
    """What is drawn and recorded: scores >= threshold, of these classes (None: all)."""

    threshold: float = 0.5
    classes: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class Tracking:
    """Track ids and boxes between inferences. enabled: the tracker stage runs (False: `--no-track`,
    the boxes exactly as the model gave them, held as --hold-detections says); infer_every: N, the
    model sees at most every Nth frame (files: frames 0, N, 2N, ..., each shot's first and the
    last; the tracker fills the others)."""

    enabled: bool = True
    infer_every: int = 1

    def __post_init__(self):
        if self.infer_every < 1:
            raise SettingsError(f"infer_every must be 1 or more (got {self.infer_every})")
        if self.infer_every > 1 and not self.enabled:
            raise SettingsError("--infer-every needs tracking to fill the frames between inferences; "
                                "drop --no-track (or `track: false`)")


Polygon = Tuple[Tuple[float, float], ...]


@dataclass(frozen=True)
class MotionSettings:
    """The motion detector (`streamer.motion`): threshold in grey levels, min_area and mask
    polygons as fractions of the picture."""

    threshold: float = 25.0
    min_area: float = 0.001
    mask: Tuple[Polygon, ...] = ()

    def __post_init__(self):
        if not 0 < self.threshold < 255:
            raise SettingsError(f"motion threshold must be between 0 and 255 grey levels (got {self.threshold:g})")
        if not 0 <= self.min_area < 1:
            raise SettingsError(f"motion min_area is a fraction of the picture, 0 to 1 (got {self.min_area:g})")


def parse_masks(texts, where: str) -> Tuple[Polygon, ...]:
    """Mask polygons given as 'x,y x,y x,y ...' (fractions of the picture): one per text."""
    from .motion import parse_polygon

    if isinstance(texts, str):
        texts = [texts]
    try:
        return tuple(parse_polygon(str(text), f"{where}[{i}]" if len(texts) > 1 else where)
                     for i, text in enumerate(texts))
    except ValueError as err:
        raise SettingsError(str(err)) from err


@dataclass(frozen=True)
class InferRule:
    """Which frames go to the model (`streamer.policy.InferPolicy`; --infer-every is in Tracking).

    on: always or motion (None: motion for cameras and webcams, always for files and without
    tracking); stationary_interval: with motion, seconds after which a still camera's frame is
    inferred anyway; motion: the detector's settings; draw_motion: draw the motion regions and
    masks on the live view (window, web page), never on a recording."""

    on: Optional[InferOn] = None
    stationary_interval: float = 10.0
    motion: MotionSettings = MotionSettings()
    draw_motion: bool = False

    def __post_init__(self):
        if not self.stationary_interval > 0:
            raise SettingsError(f"--stationary-interval must be more than 0 seconds (got {self.stationary_interval:g})")

    def resolved(self, kind: SourceKind, tracking: "Tracking") -> InferOn:
        """`on`, or the default for this kind of source."""
        if self.on is not None:
            return self.on
        return InferOn.MOTION if kind is not SourceKind.FILE and tracking.enabled else InferOn.ALWAYS

    def check(self, tracking: "Tracking") -> None:
        if self.on is InferOn.MOTION and not tracking.enabled:
            raise SettingsError("--infer-on motion needs tracking to carry the boxes through the frames not "
                                "inferred; drop --no-track (or `track: false`)")


@dataclass(frozen=True)
class EventSettings:
    """Where events go, for the whole run (every camera's events): one field per output, built by
    `parts.event_outputs`. jsonl: --events FILE (one JSON line per event); mqtt, webhooks,
    snapshots, clips: --mqtt, --webhook, --snapshots, --clips (`events.destinations`)."""

    jsonl: Optional[Path] = None
    mqtt: Optional["MqttSettings"] = None
    webhooks: Optional["WebhookSettings"] = None
    snapshots: Optional["SnapshotSettings"] = None
    clips: Optional["ClipSettings"] = None

    @property
    def outputs(self) -> List[Tuple[str, Path]]:
        """(flag, path) of every file the outputs write."""
        return [("--events", self.jsonl)] if self.jsonl is not None else []

    @property
    def any(self) -> bool:
        """Some output is asked for (events are made only then, or with zones and lines)."""
        return any(v is not None for v in (self.jsonl, self.mqtt, self.webhooks, self.snapshots, self.clips))

    @property
    def folders(self) -> List[Tuple[str, Path]]:
        """(flag, folder) of the outputs that write files into a folder (snapshots, clips)."""
        return [(flag, value.folder) for flag, value in (("--snapshots", self.snapshots), ("--clips", self.clips))
                if value is not None]


@dataclass(frozen=True)
class InferenceSettings:
    in_flight: Optional[int] = None  # None: 2 for files, 1 for live runs
    retry_timeout: float = 60.0
    request_timeout: float = 300.0


@dataclass(frozen=True)
class CameraSettings:
    """One live source of a `watch` (or the one source of a live `run`)."""

    name: str  # safe to show: labels, titles, file names
    source: str  # may hold credentials: never print it (sources.mask_url)
    record: Optional[Path] = None
    detections: Optional[Path] = None
    selection: Selection = Selection()
    hold_detections: Optional[float] = None
    loop: bool = False  # a file camera starts again at its end
    max_frames: Optional[int] = None
    tracking: Tracking = Tracking()
    regions: Optional["Regions"] = None  # its zones and counting lines (None: none)
    rule: InferRule = InferRule()
    segment: Optional[float] = None  # seconds per segment (record is then a folder); None: one file
    retain: Optional[Retention] = None  # segments: delete the oldest past this age / total size

    def __post_init__(self):
        if self.segment is not None and self.segment < 1:
            raise SettingsError(f"cameras.{self.name}.segment: a segment lasts 1 s or more (got {self.segment:g})")
        if self.retain is not None and self.segment is None:
            raise SettingsError(f"cameras.{self.name}.retain needs segments (--segment SECONDS or `segment:`): "
                                "retention deletes old segments")
        self.rule.check(self.tracking)


@dataclass(frozen=True)
class RunSettings:
    """`streamer run SOURCE`: a file (lossless) or one live source."""

    source: str
    out: Optional[Path] = None
    detections: Optional[Path] = None
    overwrite: bool = False
    selection: Selection = Selection()
    max_frames: Optional[int] = None
    audio: bool = True  # files: carry the input's audio into --out
    show: bool = False
    hold_detections: Optional[float] = None
    tracking: Tracking = Tracking()
    rule: InferRule = InferRule()
    server: ServerSettings = ServerSettings()
    inference: InferenceSettings = InferenceSettings()
    capture: CaptureSettings = CaptureSettings()
    status_every: Optional[float] = None  # None: 10 s without --show, none with it
    metrics: Optional[MetricsSettings] = None
    web: Optional[WebSettings] = None
    regions: Optional["Regions"] = None  # --zones FILE
    events: EventSettings = EventSettings()
    draw_zones: bool = False  # --draw-zones: zones and lines drawn into --out too
    segment: Optional[float] = None  # live: record in segments of this many seconds (--out is then a folder)
    retain: Optional[Retention] = None  # live segments: how long they are kept
    resume: bool = False  # files: go on from what a killed run with the same outputs left

    def __post_init__(self):
        if self.regions and not self.tracking.enabled:
            raise SettingsError("--zones counts tracked objects: drop --no-track")
        if self.events.any and not self.tracking.enabled:
            raise SettingsError("events follow tracked objects: drop --no-track (or the event outputs: --events, "
                                "--mqtt, --webhook, --snapshots, --clips)")
        self.rule.check(self.tracking)


@dataclass(frozen=True)
class WatchSettings:
    """`streamer watch`: several live cameras sharing one Triton."""

    cameras: Tuple[CameraSettings, ...]
    server: ServerSettings = ServerSettings()
    inference: InferenceSettings = InferenceSettings()
    capture: CaptureSettings = CaptureSettings()
    show: bool = False
    overwrite: bool = False
    status_every: Optional[float] = None
    metrics: Optional[MetricsSettings] = None
    web: Optional[WebSettings] = None
    events: EventSettings = EventSettings()
    draw_zones: bool = False  # --draw-zones: zones and lines drawn into the recordings too

    @property
    def outputs(self) -> List[Tuple[str, Path]]:
        """(camera.field, path) of every file the run writes."""
        found = []
        for cam in self.cameras:
            for what, path in (("record", cam.record), ("detections", cam.detections)):
                if path is not None:
                    found.append((f"cameras.{cam.name}.{what}", path))
        return found + self.events.outputs


# -- camera names -----------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_camera_name(name: str, where: str) -> str:
    if not _NAME.match(name):
        raise SettingsError(f"{where}: camera name {name!r} must be 1-64 letters, digits, '_', '.' or '-' "
                            "(it becomes a metrics label and a file name)")
    return name


def retention_setting(text: Optional[str], where: str = "--retain") -> Optional[Retention]:
    """`--retain 7d,50GB` (or a camera file's `retain:`) parsed once; SettingsError naming the field."""
    if text is None:
        return None
    try:
        return parse_retention(str(text))
    except ValueError as err:
        raise SettingsError(f"{where}: {err}") from err


DEFAULT_SEGMENT = 60.0  # `watch --out-dir`: seconds per segment unless --segment says otherwise


def quick_cameras(sources: List[str], out_dir: Optional[Path], selection: Selection,
                  hold: Optional[float], max_frames: Optional[int],
                  tracking: Tracking = Tracking(), rule: InferRule = InferRule(), segment: Optional[float] = None,
                  retain: Optional[Retention] = None) -> Tuple[CameraSettings, ...]:
    """`streamer watch SRC SRC ...`: cameras cam1, cam2, ..., recorded into out_dir when given: in
    segments under out_dir/camN/ (DEFAULT_SEGMENT seconds unless `segment` says; 0: one file,
    out_dir/camN.mp4), with the detections in out_dir/camN.jsonl."""
    cameras = []
    seconds = (segment if segment is not None else DEFAULT_SEGMENT) or None
    for i, source in enumerate(sources, start=1):
        name = f"cam{i}"
        record = None
        if out_dir:
            record = out_dir / name if seconds else out_dir / f"{name}.mp4"
        cameras.append(CameraSettings(
            name=name, source=source, selection=selection, hold_detections=hold, max_frames=max_frames,
            tracking=tracking, rule=rule, record=record, detections=out_dir / f"{name}.jsonl" if out_dir else None,
            segment=seconds if out_dir else None, retain=retain if out_dir and seconds else None))
    return tuple(cameras)


# -- the camera file ----------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}]*)\}")


def expand_env(value, where: str, env: Mapping[str, str]):
    """`${VAR}` in every string of a loaded YAML document, from `env`. A missing one is an error."""
    if isinstance(value, str):
        def sub(match: re.Match) -> str:
            var = match.group(1)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise SettingsError(f"{where}: ${{{var}}} is not a valid environment variable name")
            if var not in env:
                raise SettingsError(f"{where}: environment variable {var} is not set")
            return env[var]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def _read_yaml(path: Path, what: str):
    """The YAML document in `path` (`what`: "camera", "zones": how an unreadable file is named)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SettingsError(f"cannot read the {what} file {path} ({err.strerror})") from err
    return _yaml_load(text, path)


def _yaml_load(text: str, path: Path):
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise SettingsError(f"{path}: line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen[key] = True
        return loader.construct_mapping(node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SettingsError(f"{path}: {where}not valid YAML ({problem})") from err


def _models():
    """The camera file's schema (pydantic, imported on use)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=False)

    Threshold = Optional[float]
    from .events.config import schema_models

    Zone, Line, _ = schema_models()

    class Motion(Strict):
        threshold: Optional[float] = Field(default=None, gt=0, lt=255)
        min_area: Optional[float] = Field(default=None, ge=0, lt=1)
        mask: Optional[Union[str, List[str]]] = None

    class Defaults(Strict):
        threshold: Threshold = Field(default=None, ge=0, le=1)
        classes: Optional[List[str]] = None
        hold_detections: Optional[float] = Field(default=None, ge=0)
        loop: Optional[bool] = None
        track: Optional[bool] = None
        infer_every: Optional[int] = Field(default=None, ge=1)
        zones: Optional[Dict[str, Zone]] = None
        lines: Optional[Dict[str, Line]] = None

        infer_on: Optional[Literal["always", "motion"]] = None
        stationary_interval: Optional[float] = Field(default=None, gt=0)
        motion: Optional[Motion] = None
        segment: Optional[float] = Field(default=None, ge=0)
        retain: Optional[str] = None

    class MqttBroker(Strict):
        url: str = Field(min_length=1)
        password_file: Optional[str] = None
        ca: Optional[str] = None
        discovery: Optional[bool] = None

    class Camera(Defaults):
        source: str = Field(min_length=1)
        record: Optional[str] = None
        detections: Optional[str] = None

    class CameraFile(Strict):
        triton: Optional[Union[str, List[str]]] = None
        dns_refresh: Optional[float] = Field(default=None, gt=0)
        metrics_port: Optional[int] = Field(default=None, ge=1, le=65535)
        metrics_host: Optional[str] = None
        web: Optional[Union[int, str]] = None
        # event outputs (events.destinations): the flags of the same names win
        mqtt: Optional[Union[str, MqttBroker]] = None
        webhooks: Optional[List[str]] = None
        webhook_secret_file: Optional[str] = None
        snapshots: Optional[str] = None
        snapshot_crop: Optional[bool] = None
        clips: Optional[str] = None
        pre_capture: Optional[float] = Field(default=None, ge=0)
        post_capture: Optional[float] = Field(default=None, ge=0)
        defaults: Defaults = Defaults()
        cameras: Dict[str, Camera] = Field(min_length=1)

    return CameraFile


@dataclass(frozen=True)
class CameraFile:
    """What a camera file says: the cameras, and the run-wide values it sets (None: not set)."""

    cameras: Tuple[CameraSettings, ...]
    triton: Optional[Tuple["Target", ...]] = None
    dns_refresh: Optional[float] = None  # seconds between lookups of a dns:/// triton name
    metrics_port: Optional[int] = None
    metrics_host: Optional[str] = None
    web: Optional[str] = None  # [HOST:]PORT of the browser live view
    path: Optional[Path] = field(default=None, compare=False)
    events: EventSettings = EventSettings()  # mqtt, webhooks, snapshots, clips (the flags win)


def _pydantic_message(err) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key (check its spelling)"
    if kind == "missing":
        return f"{loc}: missing (required)"
    msg = first["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    return f"{loc}: {msg}{shown}"


def load_camera_file(path: Path, env: Optional[Mapping[str, str]] = None,
                     base: Selection = Selection(), tracking: Tracking = Tracking(),
                     rule: InferRule = InferRule(), segment: Optional[float] = None,
                     retain: Optional[Retention] = None) -> CameraFile:
    """Read and validate a camera file. Raises SettingsError naming the camera and the field."""
    from pydantic import ValidationError

    path = Path(path)
    raw = _read_yaml(path, "camera")
    if raw is None:
        raise SettingsError(f"{path}: the camera file is empty (it needs a 'cameras:' list)")
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: the camera file must be a mapping with a 'cameras:' key")
    cameras_raw = raw.get("cameras")
    if cameras_raw is None or cameras_raw == {} or cameras_raw == []:
        raise SettingsError(f"{path}: cameras: the camera list is empty (give at least one camera)")
    if isinstance(cameras_raw, list):
        raise SettingsError(f"{path}: cameras: give a mapping of camera names to settings "
                            "(e.g. `front: {{source: rtsp://...}}`), not a list")
    raw = expand_env(raw, "", os.environ if env is None else env)
    try:
        parsed = _models().model_validate(raw)
    except ValidationError as err:
        raise SettingsError(f"{path}: {_pydantic_message(err)}") from err
    folder = path.parent

    def local(value: Optional[str]) -> Optional[Path]:
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else folder / p

    def source_path(source: str) -> str:
        """A file source is relative to the camera file's folder too (URLs and webcams as given)."""
        from .sources import is_file_spec

        if not is_file_spec(source) or Path(source).expanduser().is_absolute():
            return source
        return str(folder / Path(source).expanduser())

    d = parsed.defaults
    cameras = []
    for name, cam in parsed.cameras.items():
        check_camera_name(str(name), f"{path}: cameras.{name}")
        classes = cam.classes if cam.classes is not None else d.classes
        threshold = next(v for v in (cam.threshold, d.threshold, base.threshold) if v is not None)
        camera_regions = _camera_regions(cam, d, path, str(name))
        cam_tracking = _camera_tracking(cam, d, tracking, f"{path}: cameras.{name}")
        if camera_regions and not cam_tracking.enabled:
            raise SettingsError(f"{path}: cameras.{name}: zones and lines count tracked objects; "
                                "drop `track: false` (or --no-track) for this camera")
        cameras.append(CameraSettings(
            name=str(name), source=source_path(cam.source), record=local(cam.record), detections=local(cam.detections),
            selection=Selection(threshold, tuple(classes) if classes is not None else base.classes),
            hold_detections=cam.hold_detections if cam.hold_detections is not None else d.hold_detections,
            loop=bool(cam.loop if cam.loop is not None else (d.loop or False)),
            tracking=cam_tracking, regions=camera_regions,
            rule=_camera_rule(cam, d, rule, cam_tracking, path, str(name)),
            **_camera_segments(cam, d, segment, retain, f"{path}: cameras.{name}"),
        ))
    triton = None
    if parsed.triton is not None:
        from .triton.targets import parse_targets

        text = ",".join(parsed.triton) if isinstance(parsed.triton, list) else parsed.triton
        triton = parse_targets(text, where=f"{path}: triton")
    return CameraFile(cameras=tuple(cameras), triton=triton, dns_refresh=parsed.dns_refresh,
                      metrics_port=parsed.metrics_port,
                      metrics_host=parsed.metrics_host, web=None if parsed.web is None else str(parsed.web),
                      path=path, events=_file_event_outputs(parsed, local, path, env))


def _file_event_outputs(parsed, local, path: Path, env: Optional[Mapping[str, str]]) -> EventSettings:
    """A camera file's event outputs (mqtt, webhooks, snapshots, clips); paths relative to its folder."""
    from .events.destinations import event_settings

    broker = parsed.mqtt if not isinstance(parsed.mqtt, str) else None
    return event_settings(
        mqtt=parsed.mqtt if isinstance(parsed.mqtt, str) else (broker.url if broker else None),
        mqtt_password_file=local(broker.password_file) if broker else None,
        mqtt_ca=local(broker.ca) if broker else None, mqtt_discovery=broker.discovery if broker else None,
        webhooks=tuple(parsed.webhooks or ()), webhook_secret_file=local(parsed.webhook_secret_file),
        snapshots=local(parsed.snapshots), snapshot_crop=parsed.snapshot_crop, clips=local(parsed.clips),
        pre_capture=parsed.pre_capture, post_capture=parsed.post_capture,
        env=os.environ if env is None else env, where=f"{path}: ")


def _camera_regions(cam, defaults, path: Path, name: str) -> Optional["Regions"]:
    """A camera's zones and lines: its own `zones:` / `lines:`, else those under `defaults:` (a
    camera's own list replaces the defaults' list, it does not add to it)."""
    from .events.config import RegionsError, dump, regions

    zones = cam.zones if cam.zones is not None else defaults.zones
    lines = cam.lines if cam.lines is not None else defaults.lines
    if zones is None and lines is None:
        return None
    try:
        found = regions(dump(zones), dump(lines), f"cameras.{name}", origin=str(path))
    except RegionsError as err:
        raise SettingsError(f"{path}: {err}") from err
    return found or None


def load_zones_file(path: Path) -> "Regions":
    """`run --zones FILE`: a YAML file with `zones:` and/or `lines:` (the camera file's shape).
    Raises SettingsError naming the file and the field."""
    from pydantic import ValidationError

    from .events.config import RegionsError, dump, regions, schema_models

    path = Path(path)
    raw = _read_yaml(path, "zones")
    if not isinstance(raw, dict) or not (raw.get("zones") or raw.get("lines")):
        raise SettingsError(f"{path}: a zones file is a mapping with `zones:` and/or `lines:` "
                            "(e.g. `lines: {door: {points: [[330, 0], [330, 480]]}}`)")
    raw = expand_env(raw, "", os.environ)
    try:
        parsed = schema_models()[2].model_validate(raw)
    except ValidationError as err:
        raise SettingsError(f"{path}: {_pydantic_message(err)}") from err
    try:
        return regions(dump(parsed.zones), dump(parsed.lines), "", origin=str(path))
    except RegionsError as err:
        raise SettingsError(f"{path}: {err}") from err


def _camera_segments(cam, defaults, segment: Optional[float], retain: Optional[Retention], where: str) -> dict:
    """A camera's `segment` and `retain`: its own keys, else the file's defaults, else the flags
    (segment 0: one file)."""
    seconds = next((v for v in (cam.segment, defaults.segment, segment) if v is not None), None) or None
    text = next((v for v in (cam.retain, defaults.retain) if v is not None), None)
    keep = retention_setting(text, f"{where}.retain") if text is not None else retain
    if keep is not None and seconds is None:
        if text is None:
            keep = None  # --retain applies to the cameras recorded in segments
        else:
            raise SettingsError(f"{where}.retain needs `segment:` (retention deletes old segments)")
    if seconds is not None and seconds < 1:
        raise SettingsError(f"{where}.segment: a segment lasts 1 s or more (got {seconds:g}; 0: one file)")
    return {"segment": seconds if cam.record is not None else None, "retain": keep if cam.record is not None else None}


def _camera_tracking(cam, defaults, base: Tracking, where: str) -> Tracking:
    """A camera's tracking: its own keys, else the file's defaults, else the flags (`base`)."""
    enabled = next(v for v in (cam.track, defaults.track, base.enabled) if v is not None)
    every = next(v for v in (cam.infer_every, defaults.infer_every, base.infer_every) if v is not None)
    try:
        return Tracking(enabled=enabled, infer_every=every)
    except SettingsError as err:
        raise SettingsError(f"{where}: {err}") from err


def _camera_rule(cam, defaults, base: InferRule, tracking: Tracking, path: Path, name: str) -> InferRule:
    """A camera's inference rule: its own keys, else the file's defaults, else the flags (`base`)."""
    def first(*values):
        return next((v for v in values if v is not None), None)

    where = f"{path}: cameras.{name}"
    own, shared = cam.motion, defaults.motion
    mask = base.motion.mask
    if own is not None and own.mask is not None:
        mask = parse_masks(own.mask, f"{where}.motion.mask")
    elif shared is not None and shared.mask is not None:
        mask = parse_masks(shared.mask, f"{path}: defaults.motion.mask")
    on = first(cam.infer_on, defaults.infer_on)
    try:
        rule = InferRule(
            on=InferOn(on) if on is not None else base.on,
            stationary_interval=first(cam.stationary_interval, defaults.stationary_interval, base.stationary_interval),
            motion=MotionSettings(
                threshold=first(own and own.threshold, shared and shared.threshold, base.motion.threshold),
                min_area=first(own and own.min_area, shared and shared.min_area, base.motion.min_area),
                mask=mask),
            draw_motion=base.draw_motion)
        rule.check(tracking)
    except SettingsError as err:
        raise SettingsError(f"{where}: {err}") from err
    return rule


DEFAULT_METRICS_HOST = "127.0.0.1"


def flags_over_file(found: CameraFile, triton: Optional[Tuple["Target", ...]], metrics_port: Optional[int],
                    metrics_host: str, web: Optional[str] = None
                    ) -> Tuple[Optional[Tuple["Target", ...]], Optional[int], str, Optional[str]]:
    """`watch`'s run-wide values: a flag given on the command line wins over the camera file, the
    camera file over the defaults. (triton, metrics_port, metrics_host, web)."""
    host = found.metrics_host if found.metrics_host and metrics_host == DEFAULT_METRICS_HOST else metrics_host
    return triton or found.triton, metrics_port or found.metrics_port, host, web or found.web


def dns_refresh_over_file(found: CameraFile, dns_refresh: Optional[float]) -> float:
    """`watch`'s --dns-refresh: the flag, else the camera file's `dns_refresh`, else 30 s."""
    return next(v for v in (dns_refresh, found.dns_refresh, DEFAULT_DNS_REFRESH) if v is not None)


def watch_cameras(args: List[str], out_dir: Optional[Path], base: Selection, hold: Optional[float],
                  max_frames: Optional[int], tracking: Tracking = Tracking(), rule: InferRule = InferRule(),
                  segment: Optional[float] = None, retain: Optional[Retention] = None) -> CameraFile:
    """The cameras of `streamer watch ARGS`: one camera file (.yaml/.yml), or a list of sources
    named cam1, cam2, ... (recorded into `out_dir` when given). `base` and `hold` apply where the
    file leaves them unset; `max_frames` applies to every camera. Raises SettingsError."""
    if retain is not None and segment == 0:
        raise SettingsError("--retain needs segments (--segment 0 records one file per camera)")
    first = Path(args[0])
    if first.suffix.lower() not in (".yaml", ".yml"):
        if out_dir is not None and not out_dir.is_dir():
            from .errors import SinkError

            raise SinkError(f"--out-dir {out_dir} does not exist (create it first)")
        return CameraFile(cameras=quick_cameras(list(args), out_dir, base, hold, max_frames, tracking, rule, segment,
                                                retain))
    if len(args) > 1:
        raise SettingsError("give either one camera file or a list of sources, not both")
    if out_dir is not None:
        raise SettingsError("--out-dir is for a list of sources; a camera file names each `record:` itself")
    if not first.is_file():
        raise SettingsError(f"no camera file at {first}")
    loaded = load_camera_file(first, base=base, tracking=tracking, rule=rule, segment=segment, retain=retain)
    cameras = tuple(
        replace(c, max_frames=max_frames if max_frames is not None else c.max_frames,
                hold_detections=c.hold_detections if c.hold_detections is not None else hold)
        for c in loaded.cameras)
    return replace(loaded, cameras=cameras)
