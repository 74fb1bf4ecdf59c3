"""The `streamer` command: flags -> settings -> the stages. Errors become one line and an exit code."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import click

from . import contract, interrupts
from .errors import EXIT_CODES_HELP, ExitCode, ServerStartError, SourceError, StreamerError
from .frames import Detections, from_bgr, to_bgr

DEFAULT_REPO = Path("model_repository")
DEFAULT_SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.mp4"


def say(message: str) -> None:
    click.echo(message, err=True)


def warn_untrained(info: contract.ModelInfo) -> None:
    if info.untrained:
        say(
            "WARNING: the served model has UNTRAINED (random) weights: its boxes, labels and scores are "
            "meaningless. Export real weights with `streamer export-model --weights coco` (or a .pth)."
        )


class CliError(click.ClickException):
    """A StreamerError shown as one line, with its own exit code."""

    def __init__(self, err: StreamerError):
        super().__init__(str(err))
        self.exit_code = err.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class UsageError(StreamerError):
    exit_code = ExitCode.USAGE


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
    """HOST:PORT of a Triton gRPC endpoint (port 8001 when left out)."""

    name = "HOST:PORT"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if "://" in text:
            scheme, _, text = text.partition("://")
            if scheme != "grpc":
                self.fail(f"{value!r}: give the gRPC endpoint as HOST:PORT (e.g. localhost:8001), not a {scheme} URL",
                          param, ctx)
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, "8001"
        if not host:
            self.fail(f"{value!r}: missing host (e.g. localhost:8001)", param, ctx)
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{value!r}: port must be a number 1-65535", param, ctx)
        return f"{host}:{int(port)}"


def triton_options(fn):
    """--triton, or the embedded server's --model-repo/--threads/--startup-timeout."""
    options = [
        click.option("--triton", type=TritonAddress(), default=None,
                     help="Use the Triton server at HOST:PORT (gRPC). Without it, an embedded local server is "
                          "started for this command and stopped after."),
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


@contextlib.contextmanager
def triton_session(triton: Optional[str], model_repo: Path, threads: int, startup_timeout: float,
                   model: Optional[str] = None, transport: str = "auto"):
    """(client, model info, embedded server or None) for the length of a command."""
    from .triton import TritonClient

    server = None
    if triton is None:
        server = _start_embedded(model_repo, threads, startup_timeout)
        url = server.grpc_url
    else:
        url = triton
    try:
        with TritonClient(url, model=model, transport=transport, log=say) as client:
            info = client.check()
            say(f"inference: model {client.model} ({client.codec.describe}) over {client.transport}")
            yield client, info, server
    finally:
        if server is not None:
            server.stop()
            server.cleanup()


def _start_embedded(model_repo: Path, threads: int, startup_timeout: float):
    from .server import start_on_free_ports

    say(f"starting the embedded Triton server on {model_repo} ...")
    started = time.monotonic()
    server = start_on_free_ports(model_repo, threads, startup_timeout)
    say(f"embedded Triton ready in {time.monotonic() - started:.1f} s "
        f"(gRPC {server.grpc_url}, HTTP {server.http_url})")
    return server


def _class_filter(info: contract.ModelInfo, classes: Optional[str]) -> Optional[List[int]]:
    if not classes:
        return None
    names = [c for c in classes.split(",") if c.strip()]
    try:
        return info.label_ids(names)
    except KeyError as err:
        known = ", ".join(n for n in info.class_names if n not in ("N/A", "__background__"))
        raise UsageError(f"--classes: unknown class name(s) {err.args[0]}; known: {known}") from err


def _selector(threshold: float, label_ids: Optional[List[int]]):
    def select(detections: Detections) -> Detections:
        return detections.above(threshold).with_labels(label_ids)

    return select


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
        raise UsageError(f"--weights {weights!r}: not coco, random, or an existing .pth file")
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
    from .server import EmbeddedServer, ServerSettings

    server = EmbeddedServer(ServerSettings(
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
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the annotated video here (.mp4: H.264, yuv420p, moov first).")
@click.option("--detections", "detections_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one JSON line per frame (live: per inference result): index, pts, time, status "
                   "and each detection.")
@click.option("--overwrite", is_flag=True, help="Replace existing --out / --detections files.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Draw and record detections scored at least this.")
@click.option("--classes", default=None, metavar="NAMES",
              help="Only these COCO classes, comma-separated, e.g. person,car.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after N frames (live: N captured frames).")
@click.option("--show", is_flag=True,
              help="Show the annotated video in a window (q or Esc closes it). Files play at their own pace.")
@click.option("--hold-detections", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Live: how long the newest detections stay drawn on the frames after theirs. "
                   "Default: until newer ones arrive, but never older than 3 inference times (2 s at least), "
                   "so boxes vanish while inference is offline. 0: only on the frame they were computed for.")
@triton_options
@click.option("--in-flight", type=click.IntRange(1, 64), default=None,
              help="Requests on the gRPC stream at once (overlaps transfer and compute). "
                   "Default: 2 for files; 1 for live sources (lowest latency).")
@click.option("--retry-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Files: if the server goes away, seconds to wait for it before frames count as failed. "
                   "Live runs keep the video going and wait for the server as long as they run.")
@click.option("--request-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds without any answer before the server counts as gone.")
@click.option("--rtsp-transport", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True,
              help="RTSP: interleaved over TCP (works through NAT and firewalls) or RTP over UDP.")
@click.option("--open-timeout", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="Live: seconds to connect to the camera/stream before it counts as unreachable.")
@click.option("--stall-timeout", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Live: seconds without data (socket still open) before the stream counts as dropped.")
@click.option("--status-every", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Live: print a status line (fps, refresh rate, frame age) every SECONDS on stderr. "
                   "Default: 10 without --show, none with it (the window has its HUD); 0: never.")
@click.option("--max-reconnect-time", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Live: seconds a dropped camera may stay offline (reconnecting with backoff) "
                   "before the run ends with an error.")
@command
def run(source, out, detections_path, overwrite, threshold, classes, max_frames, show, hold_detections, triton,
        model_repo, threads, startup_timeout, model, transport, in_flight, retry_timeout, request_timeout,
        rtsp_transport, open_timeout, stall_timeout, status_every, max_reconnect_time):
    """Detect objects in SOURCE: a video file, a webcam (0, /dev/video0) or a stream (rtsp://...).

    \b
    Files: every frame is decoded with PyAV, streamed to Triton over gRPC and written back
    in order: the output has every input frame, with the input's timestamps (fps, VFR and
    duration are kept). A frame whose inference fails is written unannotated and counted;
    then the exit code is 6. Odd frame sizes are padded by one pixel (yuv420p needs even sizes).

    \b
    Live sources: every captured frame is shown (--show) and recorded (--out), drawn with the
    newest detections; inference takes the newest frame whenever it is free, so latency
    never grows (the frames it skips are counted). A camera that drops is reconnected with
    backoff; a Triton server that goes away leaves the video running until it is back.
    Credentials in URLs are never printed (rtsp://***@host/path).
    """
    from .sinks import VIDEO_SUFFIXES, check_output_path
    from .sources import classify_source

    spec = classify_source(source)
    inputs = [Path(spec.target)] if not spec.live else []
    if out is not None:
        check_output_path(out, overwrite, inputs=inputs, suffixes=VIDEO_SUFFIXES)
    if detections_path is not None:
        check_output_path(detections_path, overwrite, inputs=inputs + ([out] if out else []))
    if show:
        from .window import Window

        Window.check_display()
    if out is None and detections_path is None and not show:
        say("note: no --out, --detections or --show given: frames are detected and counted only")
    if spec.live:
        from .capture import CaptureSettings

        settings = CaptureSettings(open_timeout=open_timeout, stall_timeout=stall_timeout,
                                   rtsp_transport=rtsp_transport, max_reconnect_time=max_reconnect_time)
        return _run_live(spec, settings, out, detections_path, threshold, classes, max_frames, show,
                         hold_detections, (triton, model_repo, threads, startup_timeout, model, transport),
                         in_flight or 1,
                         request_timeout, status_every if status_every is not None else (0 if show else 10))
    return _run_file(Path(spec.target), out, detections_path, threshold, classes, max_frames, show,
                     (triton, model_repo, threads, startup_timeout, model, transport), in_flight or 2,
                     retry_timeout, request_timeout)


def _recover_hook(server):
    """Restart an embedded server that died (None when the server is not ours)."""
    if server is None:
        return None

    def recover():
        if not server.alive():
            say("the embedded Triton server died; restarting it")
            server.restart()

    return recover


def _run_file(path, out, detections_path, threshold, classes, max_frames, show, session, in_flight,
              retry_timeout, request_timeout):
    from .pipeline import FilePipeline
    from .render import draw_detections
    from .sinks import JsonlSink, Mp4Sink
    from .sources import FileSource
    from .triton import InferenceStream

    with FileSource(path) as src, triton_session(*session) as (client, info, server):
        say(src.info.describe())
        label_ids = _class_filter(info, classes)
        warn_untrained(info)
        stream = InferenceStream(client, max_in_flight=in_flight, retry_timeout=retry_timeout,
                                 request_timeout=request_timeout, recover=_recover_hook(server), log=say)
        count0, compute0 = client.compute_stats()
        with contextlib.ExitStack() as sinks_stack:
            sinks = []
            if out is not None:
                sinks.append(sinks_stack.enter_context(Mp4Sink(
                    out, src.info.width, src.info.height, src.info.time_base, src.info.average_rate)))
            if detections_path is not None:
                sinks.append(sinks_stack.enter_context(JsonlSink(detections_path, info.name_of)))
            total = src.info.frame_count
            if max_frames is not None and total:
                total = min(total, max_frames)
            if show:
                from .window import FileWindowSink, Window

                sinks.append(FileWindowSink(sinks_stack.enter_context(Window(f"streamer: {path.name}")), total))
            try:
                with _progress(total) as advance:
                    stats = FilePipeline(
                        source=src,
                        inference=stream,
                        select=_selector(threshold, label_ids),
                        annotate=lambda frame, dets: draw_detections(frame.image, dets, info.name_of),
                        sinks=sinks,
                        max_frames=max_frames,
                        on_frame=lambda _stats: advance(),
                    ).run()
            finally:
                with interrupts.critical():  # a second Ctrl-C must not cut the files short
                    sinks_stack.close()
        count1, compute1 = client.compute_stats()
        if count1 > count0:
            stats.server_compute = (compute1 - compute0) / (count1 - count0)
        _report(stats, info, [p for p in (out, detections_path) if p is not None])
    if stats.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if stats.complete else ExitCode.INCOMPLETE


def _run_live(spec, settings, out, detections_path, threshold, classes, max_frames, show, hold, session,
              in_flight, request_timeout, status_every):
    from .capture import TIME_BASE, LiveCapture, make_reader
    from .live import LivePipeline, RecordingSink
    from .render import draw_detections
    from .sinks import JsonlSink, Mp4Sink
    from .triton import InferenceStream

    reader = make_reader(spec, settings)
    capture = LiveCapture(spec, reader, settings, log=say)
    say(f"connecting to {spec.name} ...")
    capture.connect()  # a wrong URL or a dead camera fails here, before the server starts
    size = f"{reader.size[0]}x{reader.size[1]}" if reader.size else "size unknown"
    rate = f"{float(reader.rate):.2f} fps" if reader.rate else "fps unknown"
    say(f"{spec.name}: live, {size}, {rate}")
    reader.close()  # a live stream is not paused while the server starts: reopen when ready
    try:
        with triton_session(*session) as (client, info, server):
            capture.connect()
            label_ids = _class_filter(info, classes)
            warn_untrained(info)
            stream = InferenceStream(client, max_in_flight=in_flight, retry_timeout=float("inf"),
                                     request_timeout=request_timeout, recover=_recover_hook(server), log=say,
                                     resend=False)
            with contextlib.ExitStack() as stack:
                recorders, result_sinks = [], []
                if out is not None:
                    def open_mp4(width, height):
                        return stack.enter_context(Mp4Sink(out, width, height, TIME_BASE, reader.rate))

                    recorders.append(RecordingSink(open_mp4))
                if detections_path is not None:
                    result_sinks.append(stack.enter_context(JsonlSink(detections_path, info.name_of)))
                window = None
                if show:
                    from .window import Window

                    window = stack.enter_context(Window(f"streamer: {spec.name}"))
                pipeline = LivePipeline(
                    capture=capture, inference=stream, select=_selector(threshold, label_ids),
                    annotate=lambda image, dets: draw_detections(image, dets, info.name_of),
                    recorders=recorders, result_sinks=result_sinks, window=window, hold=hold,
                    max_frames=max_frames, source_rate=float(reader.rate) if reader.rate else None,
                    status_every=status_every, log=say)
                try:
                    stats = pipeline.run()
                finally:
                    with interrupts.critical():
                        stack.close()
            click.echo(f"{stats.line()} | model {info.describe()}")
    finally:
        capture.stop()
        reader.close()
    for path in (out, detections_path):
        if path is not None and path.exists():
            say(f"wrote {path}")
    if stats.quit:
        say("window closed by the user")
    if stats.failed:
        say(f"WARNING: inference failed on {stats.failed} frame(s) (first error: {stats.first_error})")
    warn_untrained(info)
    if capture.error is not None:
        raise capture.error
    return ExitCode.INTERRUPTED if stats.interrupted else ExitCode.OK


def _report(stats, info: contract.ModelInfo, outputs: List[Path]) -> None:
    click.echo(f"{stats.line()} | model {info.describe()}")
    for path in outputs:
        say(f"wrote {path}")
    if stats.failed:
        say(f"WARNING: {stats.failed} frame(s) failed inference and were written unannotated "
            f"(first error: {stats.first_error})")
    if stats.source_problem:
        say(f"WARNING: input problem: {stats.source_problem}")
    if stats.interrupted:
        say(f"interrupted: stopped after {stats.written} frame(s); the output holds what was processed")
    if stats.quit:
        say(f"window closed: stopped after {stats.written} frame(s); the output holds what was processed")
    warn_untrained(info)


@contextlib.contextmanager
def _progress(total: Optional[int]) -> Iterator:
    """A progress bar with ETA on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    with click.progressbar(length=total, label="detecting", file=sys.stderr, show_eta=True,
                           show_pos=True) as bar:
        yield lambda: bar.update(1)


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
    with triton_session(triton, model_repo, threads, startup_timeout, model, transport) as (client, info, _server):
        warn_untrained(info)
        started = time.monotonic()
        detections = _selector(threshold, _class_filter(info, classes))(client.infer(rgb))
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

    return diagnose(triton, input_path or DEFAULT_SAMPLE, threshold, click.echo, model, transport)


main = cli
