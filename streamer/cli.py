"""The `streamer` command: flags -> settings -> the stages. Errors become one line and an exit code."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import click

from . import contract, interrupts
from .errors import EXIT_CODES_HELP, ExitCode, ServerStartError, SourceError, StreamerError
from .frames import from_bgr, to_bgr

if TYPE_CHECKING:
    from .runner import Console
    from .settings import CaptureSettings

DEFAULT_REPO = Path("model_repository")
DEFAULT_SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.mp4"


def say(message: str) -> None:
    click.echo(message, err=True)


def warn_untrained(info: contract.ModelInfo) -> None:
    from .runner import warn_untrained as warn

    warn(info, say)


class CliError(click.ClickException):
    """A StreamerError shown as one line, with its own exit code."""

    def __init__(self, err: StreamerError):
        super().__init__(str(err))
        self.exit_code = err.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


def command(fn):
    """Turn StreamerErrors into one-line errors, Ctrl-C / SIGTERM into exit 130, return values into exit codes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with interrupts.installed():
                code = fn(*args, **kwargs)
        except StreamerError as err:
            raise CliError(err) from err
        except KeyboardInterrupt:
            say("interrupted")
            code = ExitCode.INTERRUPTED
        click.get_current_context().exit(code or 0)

    return wrapper


class TritonAddress(click.ParamType):
    """HOST:PORT of a Triton gRPC endpoint (port 8001 when left out); several, comma-separated,
    or dns:///NAME:PORT for every address NAME resolves to."""

    name = "HOST:PORT[,...]"

    def convert(self, value, param, ctx):
        """The targets (a tuple of triton.targets.Target), parsed once here."""
        from .settings import SettingsError
        from .triton import parse_targets

        if isinstance(value, tuple):
            return value
        try:
            return parse_targets(str(value), where=repr(str(value)))
        except SettingsError as err:
            self.fail(str(err), param, ctx)


def triton_options(fn):
    """--triton, or the embedded server's --model-repo/--threads/--startup-timeout."""
    options = [
        click.option("--triton", type=TritonAddress(), default=None,
                     help="Use the Triton server at HOST:PORT (gRPC). Several: host1:8001,host2:8001 (frames go "
                          "where there is free capacity; a server that dies hands its frames to the others); "
                          "dns:///NAME:8001: every address NAME resolves to (a Kubernetes headless Service), "
                          "looked up again every --dns-refresh seconds (30). Without it, an embedded local server is started for this "
                          "command and stopped after."),
        click.option("--model-repo", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPO,
                     show_default=True, help="Model repository for the embedded server."),
        click.option("--threads", type=click.IntRange(min=0), default=0,
                     help="Torch threads of the embedded server's model (0: all cores)."),
        click.option("--startup-timeout", type=click.FloatRange(min=1), default=180.0, show_default=True,
                     help="Seconds to wait for the embedded server to be ready."),
    ] + model_options()
    for option in reversed(options):
        fn = option(fn)
    return fn


def model_options():
    """--model and --transport: which served model, and how frames reach it."""
    return [
        click.option("--model", "model", default=None, metavar="NAME",
                     help="Served model to use. Default: fasterrcnn_u8 (uint8 frames, batched by Triton) when the "
                          "server has it ready, else fasterrcnn (the seed's FP32 model)."),
        click.option("--transport", type=click.Choice(["auto", "grpc", "shm"]), default="auto", show_default=True,
                     help="How frames reach Triton: shm (system shared memory; the server must be on this host or "
                          "share its IPC namespace), grpc (inside the message), auto (shm when the server is on "
                          "this host, falling back to gRPC with a warning)."),
    ]


def dns_refresh_option(fn):
    """--dns-refresh: how often a dns:/// --triton name is looked up again (run and watch)."""
    return click.option(
        "--dns-refresh", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
        help="With --triton dns:///NAME:PORT: look NAME up again every SECONDS (default 30; more than 0). "
             "New addresses join the pool within that time (a Kubernetes headless Service: new Triton "
             "replicas take frames within SECONDS); addresses no longer resolved finish what they hold "
             "and leave. A name that resolves to nothing keeps the servers it had.")(fn)


def server_settings(triton, model_repo, threads, startup_timeout, model=None, transport="auto",
                    triton_metrics_port=None, dns_refresh=None):
    from .settings import DEFAULT_DNS_REFRESH, ServerSettings
    from .states import Transport

    return ServerSettings(triton=triton, model_repo=model_repo, threads=threads, startup_timeout=startup_timeout,
                          model=model, transport=Transport(transport), metrics_port=triton_metrics_port,
                          dns_refresh=DEFAULT_DNS_REFRESH if dns_refresh is None else dns_refresh)


def console() -> "Console":
    from .runner import Console

    return Console(say=say, out=click.echo, progress=_progress)


def tracking_options(fn):
    """--no-track and --infer-every (run and watch)."""
    options = [
        click.option("--no-track", is_flag=True,
                     help="No tracking: draw and log exactly the model's boxes, without ids; live, hold the newest "
                          "ones as --hold-detections says. Default: boxes get track ids and follow their objects "
                          "on the frames the model did not see (carried by optical flow, interpolated in files)."),
        click.option("--infer-every", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
                     help="Infer at most every Nth frame; the tracker fills the frames between (every frame is "
                          "still read, written and shown). Files: frames 0, N, 2N, ..., the first of each shot "
                          "and the last are inferred: about N times faster with a slow model. Live: leaves CPU "
                          "to the picture."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def infer_options(fn):
    """--infer-on, --stationary-interval, the motion detector's settings, --draw-motion (run and watch)."""
    options = [
        click.option("--infer-on", type=click.Choice(["always", "motion"]), default=None,
                     help="Which frames go to the model. motion: only frames where something moves (or a "
                          "tracked object moves), plus a re-check every --stationary-interval; the tracker keeps "
                          "the boxes and ids of still objects between. always: every frame (at most every "
                          "--infer-every N). Default: motion for cameras and webcams, always for files (and "
                          "always with --no-track). A file with motion: its first, last and each shot's first "
                          "frame are inferred too."),
        click.option("--stationary-interval", type=click.FloatRange(min=0, min_open=True), default=10.0,
                     show_default=True, metavar="SECONDS",
                     help="With --infer-on motion: infer a frame anyway when nothing moved for this long since "
                          "the last one (still objects re-confirmed, a still object that appeared found)."),
        click.option("--motion-threshold", type=click.FloatRange(0, 255, min_open=True, max_open=True),
                     default=25.0, show_default=True, metavar="LEVELS",
                     help="Motion: grey levels (0-255) a pixel must change by, after brightness changes are "
                          "compensated. Higher: less sensitive."),
        click.option("--motion-min-area", type=click.FloatRange(0, 1, max_open=True), default=0.001,
                     show_default=True, metavar="FRACTION",
                     help="Motion: the smallest moving region that counts, as a fraction of the picture."),
        click.option("--motion-mask", "motion_masks", multiple=True, metavar="'X,Y X,Y X,Y ...'",
                     help="Motion: a polygon to ignore (a timestamp overlay, a tree), its corners as fractions of "
                          "the picture's width and height, e.g. '0,0 0.3,0 0.3,0.06 0,0.06'. Repeat for more."),
        click.option("--draw-motion", is_flag=True,
                     help="Draw the motion regions (and masks) on the live view (--show, --web), never on a "
                          "recording: for tuning the motion settings. Live sources only."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def infer_rule(infer_on, stationary_interval, motion_threshold, motion_min_area, motion_masks, draw_motion):
    from .settings import InferRule, MotionSettings, parse_masks
    from .states import InferOn

    return InferRule(on=InferOn(infer_on) if infer_on else None, stationary_interval=stationary_interval,
                     motion=MotionSettings(threshold=motion_threshold, min_area=motion_min_area,
                                           mask=parse_masks(list(motion_masks), "--motion-mask")
                                           if motion_masks else ()),
                     draw_motion=draw_motion)


def web_options(fn):
    """--web and its companions (run and watch)."""
    options = [
        click.option("--web", "web_bind", default=None, metavar="[HOST:]PORT",
                     help="Serve a live page of every camera, annotated, at http://HOST:PORT/ (host 127.0.0.1 "
                          "unless given: reach it through SSH or kubectl port-forward). Also "
                          "/camera/NAME.mjpg, /mosaic.mjpg and /api/state. Costs nothing while nobody watches."),
        click.option("--web-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Require the token in this file on every page, stream and API call (else "
                          "$STREAMER_WEB_TOKEN if set). Give it as ?token=... once (a cookie keeps it) or "
                          "as 'Authorization: Bearer ...'."),
        click.option("--web-allowed-hosts", default=None, metavar="NAMES",
                     help="Host names (comma-separated) the page may be reached by besides loopback names and "
                          "the bound address (e.g. an ingress name); any other Host header gets 403. Pages on these "
                          "hosts may also embed the streams, and for requests to them X-Forwarded-Proto is "
                          "believed (a TLS proxy in front: the token cookie is Secure)."),
        click.option("--web-max-viewers", type=click.IntRange(1, 256), default=8, show_default=True,
                     help="Pages and MJPEG streams served at once; the next gets 503 (WebSocket: 1013)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def event_options(fn):
    """--events and --draw-zones (run and watch)."""
    options = [
        click.option("--events", "events_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="FILE",
                     help="Write one JSON line per event (a tracked object's new / update / end: zones entered "
                          "and left, lines crossed, loitering; Frigate's shape), flushed every second."),
        click.option("--draw-zones", is_flag=True,
                     help="Draw the zones and counting lines with their counts into --out / recordings too "
                          "(the window and the web page always show them)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def event_output_options(fn):
    """--mqtt, --webhook, --snapshots, --clips and their companions (run and watch), handed to the
    command as one value, `event_outputs` (a settings.EventSettings without --events)."""

    @functools.wraps(fn)
    def wrapper(*args, mqtt, mqtt_password_file, mqtt_ca, no_mqtt_discovery, webhooks, webhook_secret_file,
                snapshots, snapshot_crop, clips, pre_capture, post_capture, **kwargs):
        from .events.destinations import event_settings

        kwargs["event_outputs"] = event_settings(
            mqtt=mqtt, mqtt_password_file=mqtt_password_file, mqtt_ca=mqtt_ca,
            mqtt_discovery=False if no_mqtt_discovery else None, webhooks=tuple(webhooks),
            webhook_secret_file=webhook_secret_file, snapshots=snapshots, snapshot_crop=snapshot_crop or None,
            clips=clips, pre_capture=pre_capture, post_capture=post_capture)
        return fn(*args, **kwargs)

    file_ = click.Path(dir_okay=False, path_type=Path)
    folder = click.Path(file_okay=False, path_type=Path)
    options = [
        click.option("--mqtt", default=None, metavar="mqtt://[USER@]HOST[:PORT][/PREFIX]",
                     help="Publish events (PREFIX/events, QoS 1), retained counts per zone and line, snapshots and "
                          "availability to an MQTT broker (mqtts:// for TLS; PREFIX: streamer). Home Assistant "
                          "finds the counts by MQTT discovery. A broker that is down is retried while the run "
                          "goes on; a wrong password ends the run at start (exit 4). Never put the password "
                          "here: --mqtt-password-file or $STREAMER_MQTT_PASSWORD."),
        click.option("--mqtt-password-file", type=file_, default=None,
                     help="The MQTT password (the file's first line); else $STREAMER_MQTT_PASSWORD."),
        click.option("--mqtt-ca", type=file_, default=None,
                     help="mqtts://: the CA certificate that signed the broker's (default: the system's)."),
        click.option("--no-mqtt-discovery", is_flag=True,
                     help="Do not publish Home Assistant discovery configs (homeassistant/...)."),
        click.option("--webhook", "webhooks", multiple=True, metavar="URL",
                     help="POST each event's JSON to URL (repeatable). Timeouts, 5xx, 408 and 429 are retried "
                          "with backoff for 30 s, other 4xx are not. Signed with --webhook-secret-file."),
        click.option("--webhook-secret-file", type=file_, default=None,
                     help="Sign webhooks: X-Streamer-Signature: sha256=HMAC-SHA256(body) with the file's first "
                          "line as key (else $STREAMER_WEBHOOK_SECRET)."),
        click.option("--snapshots", type=folder, default=None, metavar="DIR",
                     help="One JPEG per tracked object in DIR: its best frame, its box drawn "
                          "(CAMERA-TIME-LABEL-ID.jpg; the path is in its events)."),
        click.option("--snapshot-crop", is_flag=True, help="With --snapshots: also a close-up of the box (-crop.jpg)."),
        click.option("--clips", type=folder, default=None, metavar="DIR",
                     help="One H.264 mp4 per event in DIR, from --pre-capture before it to --post-capture after "
                          "its end; overlapping events of a camera share one clip (its path is in the events). "
                          "Costs one more video encode per camera (see docs/events-out.md)."),
        click.option("--pre-capture", type=click.FloatRange(0, 60), default=None, metavar="SECONDS",
                     help="With --clips: video kept before an event (default 5; clips start at a keyframe, at "
                          "most this much before)."),
        click.option("--post-capture", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                     help="With --clips: video kept after the last event of a clip ends (default 5)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def recording_options(min_segment: float):
    """--segment and --retain (run on a live source, and watch)."""
    def decorate(fn):
        options = [
            click.option("--segment", type=click.FloatRange(min=min_segment), default=None, metavar="SECONDS",
                         help="Live: record in segments of SECONDS (a complete mp4 each, named by camera and start "
                              "time: DIR/YYYY-MM-DD/HH-MM-SS.mp4, with DIR/index.jsonl); the recording target is "
                              "then a folder. watch --out-dir records 60 s segments by default; 0 there: one file."),
            click.option("--retain", default=None, metavar="AGE|SIZE|AGE,SIZE",
                         help="Live segments: delete the oldest past an age (30m, 12h, 7d) and/or beyond a total "
                              "size per camera (500MB, 50GB), e.g. 7d,50GB; never the segment being written."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def summary_option(fn):
    return click.option(
        "--summary", "summary", type=click.Path(dir_okay=False, allow_dash=True), default=None, metavar="FILE",
        help="Also write the run report as JSON to FILE (-: stdout, and the accounting lines go to stderr): "
             "frames per stream, fps, latency, detections per class, servers.")(fn)


def finish(report, summary: Optional[str]) -> int:
    """Print a run report (its accounting lines, then its notes), write --summary; the exit code."""
    for line in report.lines:
        click.echo(line, err=summary == "-")
    for note in report.notes:
        say(note)
    if summary is not None:
        try:
            report.write_summary(summary)
        except OSError as err:
            from .errors import SinkError

            raise SinkError(f"cannot write the summary {summary} ({err.strerror})") from err
    return report.exit_code


def live_options(fn):
    """The request timeout, and how live sources are opened, watched and reported (run and watch)."""
    options = [
        click.option("--request-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
                     help="Seconds without any answer before the server counts as gone."),
        click.option("--rtsp-transport", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True,
                     help="RTSP: interleaved over TCP (works through NAT and firewalls) or RTP over UDP."),
        click.option("--open-timeout", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
                     help="Live: seconds to connect to a camera/stream before it counts as unreachable."),
        click.option("--stall-timeout", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
                     help="Live: seconds without data (socket still open) before a stream counts as dropped."),
        click.option("--status-every", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                     help="Live: a status line (fps, refresh rate, frame age; per camera for watch) every "
                          "SECONDS on stderr. Default: 10 without --show, none with it (the window has its "
                          "HUD); 0: never."),
        click.option("--max-reconnect-time", type=click.FloatRange(min=0), default=300.0, show_default=True,
                     help="Live: seconds a camera may stay offline (reconnecting with backoff) before it is "
                          "given up, after a drop and at the start (a camera still booting is waited for; a "
                          "wrong password or path is given up at once): `run` ends with an error; `watch` goes "
                          "on with the other cameras and exits 3 at its end."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def capture_settings(open_timeout, stall_timeout, rtsp_transport, max_reconnect_time) -> "CaptureSettings":
    from .settings import CaptureSettings

    return CaptureSettings(open_timeout=open_timeout, stall_timeout=stall_timeout, rtsp_transport=rtsp_transport,
                           max_reconnect_time=max_reconnect_time)


def metrics_options(fn):
    """--metrics-port/--metrics-host (the pipeline's Prometheus endpoint), --triton-metrics-port."""
    options = [
        click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
                     help="Serve this run's own Prometheus metrics (per camera: frames captured, shown, "
                          "inferred, skipped, failed, reconnects, latency...) on http://HOST:PORT/metrics. "
                          "(On `serve` the same flag is Triton's own metrics port.)"),
        click.option("--metrics-host", default="127.0.0.1", show_default=True,
                     help="Address the metrics endpoint binds; 0.0.0.0 lets other hosts scrape it."),
        click.option("--triton-metrics-port", type=click.IntRange(1, 65535), default=None,
                     help="Fix the embedded Triton server's own metrics port (default: a free port, printed "
                          "at start), so that Prometheus can scrape it too."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES_HELP)
@click.version_option(package_name="streamer")
def cli():
    """Real-time object detection on video with NVIDIA Triton (Faster R-CNN, COCO).

    \b
    Typical use:
      streamer export-model                 # writes model_repository/fasterrcnn{,_u8}/
      streamer run video.mp4 --out annotated.mp4
      streamer serve                        # a standing local Triton server (8000/8001/8002)
      streamer run video.mp4 --out a.mp4 --triton localhost:8001
    """


@cli.command("export-model", epilog=EXIT_CODES_HELP)
@click.option("--arch", type=click.Choice(contract.ARCHS), default=contract.DEFAULT_ARCH, show_default=True,
              help="torchvision detector. The MobileNet ones are much faster on a CPU.")
@click.option("--weights", default="coco", show_default=True, metavar="coco|random|PATH",
              help="coco: torchvision's COCO weights (downloaded once to its cache, $TORCH_HOME); "
                   "PATH: a local .pth state dict for --arch; random: UNTRAINED, for tests and plumbing only.")
@click.option("--min-size", type=click.IntRange(min=32), default=None,
              help="Shorter image side the model resizes to (arch default: 800, 320 for *_320_fpn). "
                   "Smaller is faster and finds fewer small objects.")
@click.option("--max-size", type=click.IntRange(min=32), default=None,
              help="Longer image side limit (arch default: 1333, 640 for *_320_fpn).")
@click.option("--proposals", type=click.IntRange(min=1), default=None,
              help="Region proposals kept per image (arch default: 1000, 150 for *_320_fpn). Fewer is faster.")
@click.option("--box-score-thresh", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Scores below this are never sent by the server (the client's --threshold applies on top).")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPO,
              show_default=True, help="Model repository to write fasterrcnn/ and fasterrcnn_u8/ into.")
@command
def export_model(arch, weights, min_size, max_size, proposals, box_score_thresh, repo):
    """Export torchvision's Faster R-CNN as TorchScript into a Triton model repository.

    Writes two models of the same weights, each as NAME/1/model.pt (frozen TorchScript),
    NAME/config.pbtxt (LibTorch backend) and NAME/configs/gpu.pbtxt: fasterrcnn (the seed's: one
    FP32 [3,H,W] RGB 0..1 image in; boxes [N,4], labels [N], scores [N] out) and fasterrcnn_u8
    (uint8 [H,W,3] RGB frames in, batched by Triton; boxes [K,4], labels [K], scores [K] padded
    to K detections, count [1] out). Their parameters carry the class names, the arch and
    whether the weights are untrained.
    """
    if weights not in ("coco", "random") and not Path(weights).is_file():
        from .settings import SettingsError

        raise SettingsError(f"--weights {weights!r}: not coco, random, or an existing .pth file")
    from .export import ExportSettings, export, summary  # torch is imported here only

    if weights == "random":
        say("WARNING: --weights random exports an UNTRAINED model: its detections are meaningless "
            "(use it for plumbing and tests only)")
    started = time.monotonic()
    settings = ExportSettings(arch=arch, weights=weights, min_size=min_size, max_size=max_size,
                              proposals=proposals, box_score_thresh=box_score_thresh)
    model_dir = export(settings, repo)
    click.echo(f"{summary(model_dir)} in {time.monotonic() - started:.1f} s")


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--model-repo", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPO,
              show_default=True, help="Model repository holding fasterrcnn/ (see export-model).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. 0.0.0.0 exposes the server to your network.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Torch threads for the model (0: all cores).")
@click.option("--startup-timeout", type=click.FloatRange(min=1), default=180.0, show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write tritonserver's log here (default: a temporary file, shown at start).")
@command
def serve(model_repo, host, http_port, grpc_port, metrics_port, threads, startup_timeout, log_file):
    """Run a local Triton server for the exported model until Ctrl-C / SIGTERM.

    Uses the tritonserver binary bundled in nvidia-pytriton (no Docker needed), serving
    model.pt through a Python-backend twin of the LibTorch model. Stops cleanly: no process
    or shared-memory region is left behind.
    """
    from .server import EmbeddedServer, EmbeddedServerSettings

    server = EmbeddedServer(EmbeddedServerSettings(
        repo=model_repo, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
        threads=threads, startup_timeout=startup_timeout, log_file=log_file,
    ))
    started = time.monotonic()
    say(f"starting tritonserver on {model_repo} ...")
    failed = True
    try:
        server.start()
        from .triton import TritonClient

        with TritonClient(server.grpc_url) as client:
            info = client.check()
        click.echo(
            f"Triton ready in {time.monotonic() - started:.1f} s: model {contract.MODEL_NAME} = {info.describe()}\n"
            f"  gRPC {server.grpc_url}   HTTP {server.http_url}   metrics "
            f"http://{server.settings.host}:{metrics_port}/metrics\n  log {server.log_path}\n"
            f"  use it: streamer run VIDEO --out annotated.mp4 --triton {server.grpc_url}\n"
            "Ctrl-C to stop."
        )
        warn_untrained(info)
        while server.alive():
            time.sleep(0.5)
        raise ServerStartError(f"tritonserver exited by itself: {server.log_error()} (log: {server.log_path})")
    except KeyboardInterrupt:
        say("stopping tritonserver ...")
        failed = False
        return ExitCode.OK
    finally:
        server.stop()
        if not failed or server.settings.log_file is not None:
            server.cleanup()  # keep a temporary log when something went wrong
        say("stopped")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("source")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the annotated video here (.mp4: H.264, yuv420p, moov first; fragmented while it is written, "
                   "so a kill keeps all but the last second or so). Live with --segment: a folder of segments.")
@click.option("--detections", "detections_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one JSON line per frame (live: per inference result): index, pts, time, status "
                   "and each detection.")
@click.option("--overwrite", is_flag=True, help="Replace existing --out / --detections files.")
@click.option("--resume", is_flag=True,
              help="Files: go on from what a killed run with the same --out/--detections left (same input and "
                   "options, else an error) instead of starting over; the result equals an uninterrupted run's.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Draw and record detections scored at least this.")
@click.option("--classes", default=None, metavar="NAMES",
              help="Only these COCO classes, comma-separated, e.g. person,car.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after N frames (live: N captured frames).")
@click.option("--no-audio", is_flag=True, help="Files: leave the input's audio out of --out.")
@click.option("--show", is_flag=True,
              help="Show the annotated video in a window (q or Esc closes it). Files play at their own pace.")
@click.option("--zones", "zones_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="Zones and counting lines (YAML: `zones:` and/or `lines:`, as in a camera file): objects "
                   "entering, leaving, loitering and crossing are counted (--summary, the accounting line, "
                   "metrics, the page) and become events (--events). Pixels of the picture, or \"50%\".")
@click.option("--hold-detections", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Live: how long the newest detections stay drawn on the frames after theirs (carried by the "
                   "tracker, or held as they are with --no-track). They arrive after their frame was shown, so "
                   "they are always drawn on the first frame shown after they arrive; then while their frame is at "
                   "most SECONDS older. Default: until newer ones arrive, but never older than 3 inference times "
                   "(2 s at least; with tracking 2 s), so boxes vanish while inference is offline. 0: on that "
                   "first frame only.")
@triton_options
@dns_refresh_option
@click.option("--in-flight", type=click.IntRange(1, 64), default=None,
              help="Requests on the gRPC stream at once (overlaps transfer and compute). "
                   "Default: 2 for files; 1 for live sources (lowest latency).")
@click.option("--retry-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Files: if the server goes away, seconds to wait for it before frames count as failed. "
                   "Live runs keep the video going and wait for the server as long as they run.")
@live_options
@metrics_options
@tracking_options
@infer_options
@web_options
@recording_options(min_segment=1)
@event_options
@summary_option
@command
@event_output_options
def run(source, out, detections_path, overwrite, resume, threshold, classes, max_frames, no_audio, show, zones_path,
        hold_detections,
        triton, model_repo, threads, startup_timeout, model, transport, dns_refresh, in_flight, retry_timeout,
        request_timeout,
        rtsp_transport, open_timeout, stall_timeout, status_every, max_reconnect_time, metrics_port, metrics_host,
        triton_metrics_port, no_track, infer_every, infer_on, stationary_interval, motion_threshold,
        motion_min_area, motion_masks, draw_motion, web_bind, web_token_file, web_allowed_hosts, web_max_viewers,
        events_path, draw_zones, segment, retain, summary, event_outputs):
    """Detect objects in SOURCE: a video file, a webcam (0, /dev/video0) or a stream (rtsp://...).

    \b
    Files: every frame is decoded with PyAV, streamed to Triton over gRPC and written back
    in order: the output has every input frame, with the input's timestamps (fps, VFR and
    duration are kept). A frame whose inference fails is written unannotated and counted;
    then the exit code is 6. Odd frame sizes are padded by one pixel (yuv420p needs even sizes).
    Phone videos are turned upright; the audio, pixel shape and colour tags are kept (HDR is
    tone-mapped to SDR BT.709). `streamer render` draws a --detections log again, without a server.

    \b
    Live sources: every captured frame is shown (--show) and recorded (--out), drawn with the
    newest detections; inference takes the newest frame whenever it is free, so latency
    never grows (the frames it skips are counted). A camera that drops is reconnected with
    backoff; a Triton server that goes away leaves the video running until it is back.
    Credentials in URLs are never printed (rtsp://***@host/path).

    \b
    Which frames are inferred (--infer-on): cameras and webcams default to motion (only
    frames where something moves, plus a re-check every --stationary-interval seconds;
    still objects keep their boxes and ids), files to always (every frame, or every
    --infer-every N). `run video.mp4 --infer-on motion` infers the moving parts of a long
    static file and tracks the rest: many times faster, every frame still written.
    """
    from .runner import run_command
    from dataclasses import replace

    from .settings import (InferenceSettings, MetricsSettings, RunSettings, Selection, Tracking,
                           load_zones_file, retention_setting, web_settings)

    settings = RunSettings(
        source=source, out=out, detections=detections_path, overwrite=overwrite,
        selection=Selection(threshold, _class_names(classes)), max_frames=max_frames, audio=not no_audio,
        show=show, hold_detections=hold_detections, tracking=Tracking(not no_track, infer_every),
        rule=infer_rule(infer_on, stationary_interval, motion_threshold, motion_min_area, motion_masks, draw_motion),
        server=server_settings(triton, model_repo, threads, startup_timeout, model, transport, triton_metrics_port,
                               dns_refresh),
        inference=InferenceSettings(in_flight=in_flight, retry_timeout=retry_timeout,
                                    request_timeout=request_timeout),
        capture=capture_settings(open_timeout, stall_timeout, rtsp_transport, max_reconnect_time),
        status_every=status_every,
        metrics=MetricsSettings(metrics_port, metrics_host) if metrics_port else None,
        web=web_settings(web_bind, web_token_file, web_allowed_hosts, web_max_viewers),
        regions=load_zones_file(zones_path) if zones_path is not None else None,
        events=replace(event_outputs, jsonl=events_path), draw_zones=draw_zones,
        segment=segment, retain=retention_setting(retain), resume=resume,
    )
    return finish(run_command(settings, console()), summary)


def _class_names(classes: Optional[str]) -> Optional[tuple]:
    names = tuple(c.strip() for c in (classes or "").split(",") if c.strip())
    return names or None


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("cameras", nargs=-1, required=True, metavar="CAMERAS.yaml | SOURCE...")
@click.option("--show", is_flag=True,
              help="One window with a mosaic of all cameras, each tile with its name, HUD line and its own "
                   "OFFLINE banner (q or Esc closes it).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Without a camera file: record each camera in segments to OUT_DIR/camN/YYYY-MM-DD/HH-MM-SS.mp4 "
                   "(60 s each unless --segment; --segment 0: one file, OUT_DIR/camN.mp4) and its detections to "
                   "OUT_DIR/camN.jsonl.")
@click.option("--overwrite", is_flag=True, help="Replace existing recordings and detection files.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Draw and record detections scored at least this (a camera file's `threshold` wins).")
@click.option("--classes", default=None, metavar="NAMES",
              help="Only these COCO classes, comma-separated (a camera file's `classes` wins).")
@click.option("--hold-detections", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="How long the newest detections stay drawn (see `run --help`).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Each camera stops after N captured frames.")
@triton_options
@dns_refresh_option
@click.option("--in-flight", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Requests in flight per server, shared by all cameras (each free slot goes to the camera "
                   "served least recently).")
@live_options
@metrics_options
@tracking_options
@infer_options
@web_options
@recording_options(min_segment=0)
@event_options
@summary_option
@command
@event_output_options
def watch(cameras, show, out_dir, overwrite, threshold, classes, hold_detections, max_frames, triton, model_repo,
          threads, startup_timeout, model, transport, dns_refresh, in_flight, request_timeout, rtsp_transport, open_timeout,
          stall_timeout,
          status_every, max_reconnect_time, metrics_port, metrics_host, triton_metrics_port, no_track, infer_every,
          infer_on, stationary_interval, motion_threshold, motion_min_area, motion_masks, draw_motion,
          web_bind, web_token_file, web_allowed_hosts, web_max_viewers, events_path, draw_zones, segment, retain,
          summary, event_outputs):
    """Watch several cameras in one run, sharing one Triton server.

    \b
    With a camera file (YAML):
      streamer watch cameras.yaml [--show] [--metrics-port 9108]
    or for a quick look, with cameras named cam1, cam2, ...:
      streamer watch rtsp://a/1 rtsp://b/2 0 [--out-dir recordings/]

    \b
    Every camera: every captured frame shown and recorded, the newest frame offered for
    inference; each free inference slot goes to the camera served least recently, so
    cameras of different frame rates refresh alike. Each camera reconnects on its own;
    one that is down never stalls the others. Files listed as cameras play at their own
    pace and end at their end (unless `loop: true`). Paths in a camera file are relative
    to the file's folder; `${VAR}` is taken from the environment.

    \b
    Camera file keys: triton, dns_refresh, metrics_port, metrics_host, defaults {threshold, classes,
    hold_detections, loop, track, infer_every, infer_on, stationary_interval, motion {threshold,
    min_area, mask}, zones, lines, segment, retain}, cameras {NAME: {source, record, detections, and
    the keys of defaults}}, web, and the event outputs mqtt (a URL, or {url, password_file, ca,
    discovery}), webhooks, webhook_secret_file, snapshots, snapshot_crop, clips, pre_capture,
    post_capture (flags win). Cameras infer on motion by default (files listed as cameras: always).
    With `segment:` a camera's `record:` is the folder of its segments. Exit 3 when a camera could
    not be opened or was given up on (the others still ran), or a zone or line lies outside its
    picture; 5 when a recording could not be written (the video went on); 2 for a bad camera file.
    """
    from .runner import watch_command
    from dataclasses import replace

    from .events.destinations import over
    from .settings import (InferenceSettings, MetricsSettings, Selection, Tracking, WatchSettings,
                           dns_refresh_over_file, flags_over_file, retention_setting, watch_cameras, web_settings)

    found = watch_cameras(list(cameras), out_dir, Selection(threshold, _class_names(classes)), hold_detections,
                          max_frames, Tracking(not no_track, infer_every),
                          infer_rule(infer_on, stationary_interval, motion_threshold, motion_min_area, motion_masks,
                                     draw_motion), segment, retention_setting(retain))
    cams = found.cameras
    triton, metrics_port, metrics_host, web_bind = flags_over_file(found, triton, metrics_port, metrics_host,
                                                                   web_bind)
    settings = WatchSettings(
        cameras=cams,
        server=server_settings(triton, model_repo, threads, startup_timeout, model, transport, triton_metrics_port,
                               dns_refresh_over_file(found, dns_refresh)),
        inference=InferenceSettings(in_flight=in_flight, request_timeout=request_timeout),
        capture=capture_settings(open_timeout, stall_timeout, rtsp_transport, max_reconnect_time),
        show=show, overwrite=overwrite, status_every=status_every,
        metrics=MetricsSettings(metrics_port, metrics_host) if metrics_port else None,
        web=web_settings(web_bind, web_token_file, web_allowed_hosts, web_max_viewers,
                         where="--web" if web_bind and not found.web else f"{found.path}: web"),
        events=over(replace(event_outputs, jsonl=events_path), found.events), draw_zones=draw_zones,
    )
    return finish(watch_command(settings, console()), summary)


@contextlib.contextmanager
def _progress(total: Optional[int]) -> Iterator:
    """A progress bar with ETA on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    with click.progressbar(length=total, label="detecting", file=sys.stderr, show_eta=True,
                           show_pos=True) as bar:
        yield lambda: bar.update(1)


@cli.command("render", epilog=EXIT_CODES_HELP)
@click.argument("video", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--detections", "detections_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The JSONL log a `streamer run VIDEO --detections` wrote.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the annotated video here (.mp4).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Draw detections scored at least this (default: the run's; it cannot go below it).")
@click.option("--classes", default=None, metavar="NAMES", help="Only these classes, e.g. person,car.")
@click.option("--no-audio", is_flag=True, help="Leave the input's audio out.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@summary_option
@command
def render(video, detections_path, out, threshold, classes, no_audio, overwrite, summary):
    """Draw a detections log onto its VIDEO again, without Triton: change the threshold or classes.

    Frames are matched to the log by index and PTS; a log from another video is refused.
    The output follows `run`'s rules (upright, audio, pixel shape, colour, timing).
    """
    from .rerender import load_log, render as render_log
    from .sinks import VIDEO_SUFFIXES, check_output_path
    from .sources import parse_source

    video = parse_source(str(video))
    check_output_path(out, overwrite, inputs=[video, detections_path], suffixes=VIDEO_SUFFIXES)
    log = load_log(detections_path)
    names = [c for c in classes.split(",") if c.strip()] if classes else None
    return finish(render_log(video, log, out, threshold, names, audio=not no_audio, say=say), summary)


@cli.command("recover", epilog=EXIT_CODES_HELP)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an output that exists already.")
@command
def recover_command(path, overwrite):
    """Finish what a killed run left: PATH is an output (a.mp4, a.jsonl), one of its partial files
    (.a.partial-RUNID.mp4), or a folder (every camera's segment folder and output below it).

    \b
    Videos are cut back to their last whole fragment (everything up to a second or so before the
    kill) and finished moov-first; detection logs are cut back to their last whole line; partial
    segments are finished and listed in their camera's index.jsonl. Partials a running streamer
    is still writing are left alone. `run ... --resume` goes on with a file run instead.
    """
    from .recording.recover import recover

    for line in recover(path, overwrite, say):
        click.echo(line)
    return ExitCode.OK


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the annotated image here (.png, .jpg).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--classes", default=None, metavar="NAMES", help="Only these classes, e.g. person,car.")
@triton_options
@command
def detect(image, out, overwrite, threshold, classes, triton, model_repo, threads, startup_timeout, model,
           transport):
    """Detect objects in one IMAGE: print them, and draw them into --out."""
    import cv2

    from .render import draw_detections
    from .sinks import check_output_path

    if not image.is_file():
        raise SourceError(f"no such file: {image}")
    if out is not None:
        check_output_path(out, overwrite, inputs=[image], suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".webp"))
    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"{image} is not an image OpenCV can read (png, jpg, bmp, webp, tiff...)")
    rgb = from_bgr(bgr)
    from .frames import Frame
    from .runner import label_filter, triton_session
    from .selection import selection_stages

    server = server_settings(triton, model_repo, threads, startup_timeout, model, transport)
    with triton_session(server, say) as (client, info, _server):
        warn_untrained(info)
        started = time.monotonic()
        selection = selection_stages(threshold, label_filter(info, _class_names(classes)))
        detections = selection.answer(Frame(0, None, None, started, rgb), client.infer(rgb))
        elapsed = time.monotonic() - started
    click.echo(f"{image}: {rgb.shape[1]}x{rgb.shape[0]}, {len(detections)} detection(s) >= {threshold} "
               f"in {elapsed * 1000:.0f} ms ({info.describe()})")
    for box, label, score in zip(detections.boxes, detections.labels, detections.scores):
        x1, y1, x2, y2 = (f"{v:.0f}" for v in box)
        click.echo(f"  {info.name_of(int(label)):<16} {score:.3f}  [{x1}, {y1}, {x2}, {y2}]")
    if out is not None:
        annotated = draw_detections(rgb, detections, info.name_of)
        if not cv2.imwrite(str(out), to_bgr(annotated)):
            from .errors import SinkError

            raise SinkError(f"OpenCV could not write {out}")
        say(f"wrote {out}")


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--triton", type=TritonAddress(), default="127.0.0.1:8001", show_default=True,
              help="The Triton gRPC endpoint to check.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Image or video whose first frame is sent (default: the bundled samples/sample.mp4).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--model", "model", default=None, metavar="NAME",
              help="Check only this model (default: fasterrcnn_u8 and fasterrcnn, each when served).")
@click.option("--transport", type=click.Choice(["auto", "grpc", "shm"]), default="auto", show_default=True,
              help="How the test frames reach Triton (see `streamer run --help`).")
@command
def doctor(triton, input_path, threshold, model, transport):
    """Check a Triton server step by step and explain what is wrong.

    Is the server live and ready; for each model (fasterrcnn_u8, fasterrcnn): is it served,
    do its inputs/outputs match its contract, how the frames travel (shared memory or
    gRPC), how long inferences take (client round trip and the server's compute per
    frame), what the outputs look like, and, when nothing is detected, why.
    """
    from .doctor import diagnose
    from .triton import resolve

    targets = triton
    urls = resolve(targets)
    if len(urls) == 1 and not targets[0].dns:
        return diagnose(urls[0], input_path or DEFAULT_SAMPLE, threshold, click.echo, model, transport)
    if not urls:
        click.echo(f"[FAIL] {','.join(t.text for t in targets)} resolves to no address")
        return ExitCode.INFERENCE
    codes = []
    for url in urls:
        click.echo(f"== server {url}")
        codes.append(diagnose(url, input_path or DEFAULT_SAMPLE, threshold, click.echo, model, transport))
    bad = [url for url, code in zip(urls, codes) if code]
    if bad:
        click.echo(f"[FAIL] {len(bad)} of {len(urls)} servers failed: {', '.join(bad)}")
    return next((code for code in codes if code), ExitCode.OK)


main = cli
