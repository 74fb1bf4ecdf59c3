"""The runner: wires the stages from frozen settings and owns their lifetimes.

Server session (a running Triton, or the embedded one), sources, pipelines, sinks,
the metrics endpoint, and the order they are shut down in. The CLI builds the settings,
calls `run_command` / `watch_command`, and prints nothing itself but errors.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, ContextManager, Iterator, List, Optional, Sequence

from . import contract, interrupts, parts
from .errors import ExitCode, FinalSourceError, SinkError, SourceError
from .pipeline import by_name
from .report import RunReport
from .settings import CameraSettings, RunSettings, ServerSettings, SettingsError, WatchSettings, WebSettings
from .stages import ServerShare
from .states import CaptureState, InferenceState, SourceKind

Progress = Callable[[Optional[int]], ContextManager[Callable[[], None]]]


@contextlib.contextmanager
def no_progress(total: Optional[int]) -> Iterator[Callable[[], None]]:
    yield lambda: None


@dataclass(frozen=True)
class Console:
    """Where a command speaks: `say` (stderr: notes, warnings), `out` (stdout: the accounting)."""

    say: Callable[[str], None]
    out: Callable[[str], None]
    progress: Progress = no_progress


def untrained_warning(info: contract.ModelInfo) -> List[str]:
    if not info.untrained:
        return []
    return ["WARNING: the served model has UNTRAINED (random) weights: its boxes, labels and scores are "
            "meaningless. Export real weights with `streamer export-model --weights coco` (or a .pth)."]


def warn_untrained(info: contract.ModelInfo, say: Callable[[str], None]) -> None:
    for line in untrained_warning(info):
        say(line)


# -- the server session ------------------------------------------------------------------------

def make_client(url: str, server: ServerSettings, say: Callable[[str], None], outputs=None):
    """The one place a command's Triton clients are made (the model and transport are
    settled by the client's check()). `outputs`: the run's OutputCheck, shared by its clients."""
    from .triton import TritonClient

    return TritonClient(url, model=server.model, transport=server.transport, log=say, outputs=outputs)


def describe_client(client) -> str:
    return f"inference: model {client.model} ({client.codec.describe}) over {client.transport}"


def pooled(server: ServerSettings) -> bool:
    """Several servers (a list, or a dns:/// name standing for all its addresses)."""
    return server.triton is not None and (len(server.triton) > 1 or server.triton[0].dns)


def check_servers(urls: Sequence[str], server: ServerSettings, say: Callable[[str], None]):
    """Check every server; (first good client, its model info). One that does not answer is left
    to join later; one that answers with the wrong model is an error naming it."""
    from .errors import InferenceError, ServerUnavailable

    good, down = [], []
    for url in urls:
        client = make_client(url, server, say)
        try:
            info = client.check()
        except ServerUnavailable as err:
            client.close()
            down.append((url, err))
            continue
        except InferenceError as err:
            client.close()
            raise type(err)(f"server {url}: {err}") from err
        good.append((client, info))
    if not good:
        reasons = "; ".join(f"{url}: {err}" for url, err in down) or "no address"
        raise ServerUnavailable(f"none of the Triton servers answers ({reasons})")
    for url, err in down:
        say(f"WARNING: Triton server {url} does not answer now ({err}); it joins when it is back")
    for client, _ in good[1:]:
        client.close()
    return good[0]


@contextlib.contextmanager
def triton_session(server: ServerSettings, say: Callable[[str], None], live: bool = False):
    """(client, model info, embedded server or None) for the length of a command. With several
    servers the client is the first that answers; every server has been checked."""
    embedded = None
    if server.triton is None:
        embedded = start_embedded(server, say, LIVE_NICENESS if live else 0)
        urls = [embedded.grpc_url]
    elif pooled(server):
        from .triton import resolve

        urls = resolve(server.triton)
        given = ",".join(target.text for target in server.triton)
        say(f"Triton servers: {', '.join(urls) or 'none resolved'} (from --triton {given})")
    else:
        urls = [server.triton[0].text]
    try:
        if len(urls) == 1 and not pooled(server):
            with make_client(urls[0], server, say) as client:
                info = client.check()
                say(describe_client(client))
                yield client, info, embedded
        else:
            client, info = check_servers(urls, server, say)
            with client:
                say(describe_client(client))
                yield client, info, embedded
    finally:
        if embedded is not None:
            embedded.stop()
            embedded.cleanup()


def inference_for(server: ServerSettings, client, embedded, inference, live: bool, say: Callable[[str], None]):
    """The inference stage: one server's InferenceStream, or a pool over several servers."""
    from .triton import InferenceStream

    in_flight = inference.in_flight or (1 if live else 2)
    retry = float("inf") if live else inference.retry_timeout
    if pooled(server):
        from .triton import ServerPool

        return ServerPool(server.triton, lambda url: make_client(url, server, say, client.outputs),
                          max_in_flight=in_flight, retry_timeout=retry,
                          request_timeout=inference.request_timeout, resend=not live, log=say,
                          refresh=server.dns_refresh)
    return InferenceStream(client, max_in_flight=in_flight, retry_timeout=retry,
                           request_timeout=inference.request_timeout, recover=recover_hook(embedded, say), log=say,
                           resend=not live)


# Live runs start the embedded server this much nicer: when the CPU is short, capture, drawing and
# recording (the picture) come first and inference takes what is left.
LIVE_NICENESS = 10


def start_embedded(server: ServerSettings, say: Callable[[str], None], niceness: int = 0):
    from .server import start_on_free_ports

    say(f"starting the embedded Triton server on {server.model_repo} ...")
    started = time.monotonic()
    embedded = start_on_free_ports(server.model_repo, server.threads, server.startup_timeout,
                                   metrics_port=server.metrics_port, niceness=niceness)
    say(f"embedded Triton ready in {time.monotonic() - started:.1f} s "
        f"(gRPC {embedded.grpc_url}, HTTP {embedded.http_url}); Triton metrics: {embedded.metrics_url}")
    return embedded


def recover_hook(server, say: Callable[[str], None]):
    """Restart an embedded server that died (None when the server is not ours)."""
    if server is None:
        return None

    def recover():
        if not server.alive():
            say("the embedded Triton server died; restarting it")
            server.restart()

    return recover


def check_region_classes(info: contract.ModelInfo, regions) -> None:
    """Every class a zone or line names is one the model knows (SettingsError naming the field)."""
    if not regions:
        return
    for where, names in regions.class_names():
        label_filter(info, names, where)


def check_folders(events) -> None:
    """--snapshots / --clips folders exist and are writable (SinkError, exit 5)."""
    if events.folders:
        from .events.destinations import check_folders as check

        check(events)


def event_outputs(settings, stack: contextlib.ExitStack, say: Callable[[str], None]):
    """The run's event outputs, entered on `stack`, behind one fan-out (events.outputs.Fanout)."""
    from .events.outputs import Fanout

    return Fanout([stack.enter_context(output) for output in parts.event_outputs(settings, say)], say)


@contextlib.contextmanager
def opened_event_outputs(settings, say: Callable[[str], None]):
    """The run's event outputs for the length of the run, entered before the Triton session: a
    broker that refuses the credentials ends the run (exit 4) before a server is started."""
    with contextlib.ExitStack() as stack:
        yield event_outputs(settings, stack, say)


def label_filter(info: contract.ModelInfo, classes: Optional[Sequence[str]], where: str = "--classes"):
    if not classes:
        return None
    names = [c for c in classes if c.strip()]
    try:
        return info.label_ids(names)
    except KeyError as err:
        known = ", ".join(n for n in info.class_names if n not in ("N/A", "__background__"))
        raise SettingsError(f"{where}: unknown class name(s) {err.args[0]}; known: {known}") from err


@contextlib.contextmanager
def metrics_endpoint(settings, samples, say: Callable[[str], None], outputs: Callable[[], Sequence] = lambda: ()):
    """The pipeline's Prometheus endpoint for the length of a run (nothing when not asked).
    `outputs`: the event outputs' statuses."""
    if settings is None:
        yield None
        return
    from .metrics import MetricsServer

    server = MetricsServer(samples, host=settings.host, port=settings.port, outputs=outputs).start()
    say(f"streamer metrics: {server.url}")
    try:
        yield server
    finally:
        server.stop()


def open_displays(displays, web: Optional[WebSettings], info: contract.ModelInfo, stack: contextlib.ExitStack,
                  say: Callable[[str], None]):
    """Enter every display and the web page (it binds its port here: one in use is exit 4); say
    where the page is."""
    opened = [stack.enter_context(display) for display in displays]
    page = parts.web_display(web, info)
    if page is not None:
        from .web import exposure_warning

        opened.append(stack.enter_context(page))
        say(f"web view: {page.url}" + (" (token required)" if web.token else ""))
        warning = exposure_warning(web.host, web.token)
        if warning:
            say(warning)
    return opened


# -- streamer run ---------------------------------------------------------------------------

def run_command(settings: RunSettings, console: Console) -> RunReport:
    from .sinks import VIDEO_SUFFIXES, check_output_path
    from .sources import classify_source

    spec = classify_source(settings.source)
    if settings.rule.draw_motion and not spec.live:
        raise SettingsError("--draw-motion draws on the live view of a camera, webcam or stream; a file run has "
                            "none (use --infer-on motion with --detections or --out to see what it infers)")
    inputs = [Path(spec.target)] if not spec.live else []
    if not spec.live and (settings.segment is not None or settings.retain is not None):
        raise SettingsError("--segment and --retain are for live sources (a file run writes one --out)")
    if spec.live and settings.resume:
        raise SettingsError("--resume is for files (a live run records what it sees: see --segment)")
    if settings.resume and settings.out is None and settings.detections is None:
        raise SettingsError("--resume needs the --out and/or --detections of the run to go on with")
    if settings.out is not None and settings.segment is None:
        check_output_path(settings.out, settings.overwrite, inputs=inputs, suffixes=VIDEO_SUFFIXES)
    if settings.detections is not None:
        check_output_path(settings.detections, settings.overwrite,
                          inputs=inputs + ([settings.out] if settings.out else []))
    for flag, path in settings.events.outputs:
        taken = [p for p in (settings.out, settings.detections) if p is not None]
        if any(path.resolve() == p.resolve() for p in taken):
            raise SinkError(f"{flag} {path} is also written by --out or --detections; give it its own file")
        check_output_path(path, settings.overwrite, inputs=inputs)
    check_folders(settings.events)
    if settings.show:
        from .window import Window

        Window.check_display()
    if settings.out is None and settings.detections is None and not settings.show:
        console.say("note: no --out, --detections or --show given: frames are detected and counted only")
    if spec.live:
        camera = CameraSettings(name="cam1", source=settings.source, record=settings.out,
                                detections=settings.detections, selection=settings.selection,
                                hold_detections=settings.hold_detections, max_frames=settings.max_frames,
                                tracking=settings.tracking, regions=settings.regions, rule=settings.rule,
                                segment=settings.segment, retain=settings.retain)
        watch = WatchSettings(cameras=(camera,), server=settings.server, inference=settings.inference,
                              capture=settings.capture, show=settings.show, overwrite=settings.overwrite,
                              status_every=settings.status_every, metrics=settings.metrics, web=settings.web,
                              events=settings.events, draw_zones=settings.draw_zones)
        report = run_cameras(watch, console)
        report.command = "run"
        return report
    return run_file(settings, Path(spec.target), console)


def servers_json(shares: Sequence[ServerShare]) -> List[dict]:
    return [{"url": share.url, "frames": share.frames} for share in shares]


def run_file(settings: RunSettings, path: Path, console: Console) -> RunReport:
    from .pipeline import FilePipeline, draw
    from .recording.files import OutputFailed
    from .recording.resume import restored_stages
    from .sources import FileSource

    say = console.say
    started = time.monotonic()
    with FileSource(path, audio=settings.audio, log=say) as src, opened_event_outputs(settings.events, say) as fanout, \
            triton_session(settings.server, say) as (client, info, server):
        say(src.info.describe())
        label_ids = label_filter(info, settings.selection.classes)
        check_region_classes(info, settings.regions)
        warn_untrained(info, say)
        outputs = resumable_outputs(settings, path, info, client, label_ids, say)
        start = outputs.start if outputs is not None else 0
        events = parts.event_stage(path.name, settings.regions, info.name_of, fanout, False, settings.tracking)
        regions = parts.region_annotators(events)
        stages, policy = restored_stages(outputs.plan if outputs is not None else None)
        if stages is None:
            policy = parts.infer_policy(settings.rule, settings.tracking, SourceKind.FILE)
            stages = parts.file_stages(settings.selection, label_ids,
                                       parts.file_tracker(settings.selection, settings.tracking, policy), events)
        if outputs is not None and events is None:
            outputs.watch(stages, policy)
        elif outputs is not None:  # counts and open events are not checkpointed: a --resume starts over
            outputs.without_checkpoints()
            if settings.resume and start == 0:
                say("note: a run with zones, lines or event outputs keeps no checkpoints: --resume starts it over")
        stream = parts.file_inference(inference_for(settings.server, client, server, settings.inference, False, say),
                                      policy)
        count0, compute0 = stream.compute_stats()
        try:
            with contextlib.ExitStack() as parts_stack:
                sinks = [parts_stack.enter_context(sink)
                         for sink in parts.file_sinks(settings, src, info, label_ids, say, outputs)
                         + fanout.frame_sinks(path.name, lossless=True)]
                displays = open_displays(parts.displays(settings.show, f"streamer: {path.name}", paced=True),
                                         settings.web, info, parts_stack, say)
                total = src.info.frame_count
                if settings.max_frames is not None and total:
                    total = min(total, settings.max_frames)
                if total and start:
                    total -= start
                try:
                    with console.progress(total) as advance:
                        annotators = parts.annotators(info) + (regions if settings.draw_zones else [])
                        source = src if outputs is None else \
                            outputs.source(src, lambda frame, detections: draw(frame.image, detections, annotators))
                        pipeline = FilePipeline(
                            source=source, inference=stream, stages=stages,
                            annotators=annotators, sinks=sinks, displays=displays,
                            max_frames=None if settings.max_frames is None else max(0, settings.max_frames - start),
                            on_frame=lambda _stats: advance(), name=path.name, total=total,
                            overlays=[] if settings.draw_zones else regions, events=events,
                            event_outputs=fanout.statuses,
                            on_settled=outputs.settled if outputs is not None else lambda frame: None)
                        samples = lambda: [file_sample(path.name, pipeline, info.name_of, events)]  # noqa: E731
                        with metrics_endpoint(settings.metrics, samples, say, fanout.statuses), \
                                contextlib.closing(stream):
                            stats = pipeline.run()
                            count1, compute1 = stream.compute_stats()
                finally:
                    with interrupts.critical():  # a second Ctrl-C must not cut the files short
                        parts_stack.close()
        except OutputFailed as err:
            if outputs is None:
                raise
            raise kept_error(err, outputs) from err
        except BaseException:
            finish_outputs(outputs)  # another error: the outputs hold what was done, as they always did
            raise
        finish_outputs(outputs)
        if count1 > count0:
            stats.server_compute = (compute1 - compute0) / (count1 - count0)
        stats.motion_frames = policy.moved if policy.detector is not None else None
        if pooled(settings.server):
            stats.servers, stats.moved, stats.moved_slow = tuple(stream.servers()), stream.moved, stream.moved_slow
        shares = stream.servers()
        model = report_model(info, client)
    if stats.interrupted:
        code = ExitCode.INTERRUPTED
    else:
        code = ExitCode.OK if stats.complete else ExitCode.INCOMPLETE
    report = RunReport(command="run", exit_code=code, elapsed_s=time.monotonic() - started, model=model,
                       servers=servers_json(shares), moved=stream.moved, moved_slow=stream.moved_slow,
                       streams=[stats.report(path.name, info.name_of)],
                       event_outputs=[status.to_json() for status in fanout.statuses()])
    counted = counts_of(events)
    report.streams[0].counts = None if counted is None else counted.to_json()
    report.lines.append(f"{stats.line()}{counts_part(counted)} | model {info.describe()}")
    report.notes.extend(_file_notes(stats, info, [p for p in (settings.out, settings.detections) if p is not None]
                                    + [p for _, p in settings.events.outputs]))
    report.notes.extend(output_notes(fanout.statuses()))
    report.notes.extend(note for note in [client.outputs.summary()] if note)
    report.invalid_boxes = client.outputs.rows
    if start:
        report.notes.append(f"resumed at frame {start}: frames 0-{start - 1} are the earlier run's")
        earlier_failed = outputs.plan.failed_before
        if earlier_failed:
            report.notes.append(f"WARNING: the earlier run failed inference on {earlier_failed} frame(s)")
            if code == ExitCode.OK:
                report.exit_code = ExitCode.INCOMPLETE
    return report


def resumable_outputs(settings: RunSettings, path: Path, info: contract.ModelInfo, client, label_ids, say):
    """A file run's --out/--detections written so that a kill can be resumed (None: neither asked
    for); with --resume, going on from what a killed run of the same outputs left."""
    from .recording.resume import FileRunOutputs, input_identity, manifests_for, plan_resume, run_options

    if settings.out is None and settings.detections is None:
        return None
    anchor = settings.out or settings.detections
    if manifests_for(anchor, locked=True):
        raise SinkError(f"another streamer run is writing {anchor} now (its partial files are locked); "
                        "wait for it, or choose another output")
    identity = input_identity(path)
    rule = settings.rule
    inference = {"infer_on": str(rule.resolved(SourceKind.FILE, settings.tracking)),
                 "stationary_s": rule.stationary_interval,
                 "motion": {"threshold": rule.motion.threshold, "min_area": rule.motion.min_area,
                            "mask": [[list(map(float, p)) for p in poly] for poly in rule.motion.mask]},
                 "draw_zones": settings.draw_zones, "zones": repr(settings.regions) if settings.regions else None,
                 "event_outputs": settings.events.any}
    options = run_options(settings.selection.threshold, label_ids, settings.tracking.enabled,
                          settings.tracking.infer_every, settings.audio, settings.max_frames, report_model(info, client),
                          inference)
    plan = None
    if settings.resume:
        plan = plan_resume(anchor, identity, options, settings.out, settings.detections, say)
        if plan is not None:
            say(f"resuming at frame {plan.start} (the earlier run's frames 0-{plan.start - 1} are kept)"
                if plan.start else "resuming: nothing the earlier run wrote can be kept; starting from the first frame")
    else:
        left = manifests_for(anchor)
        if left:
            say(f"note: an unfinished run of {anchor} is beside it ({left[0].name}): `--resume` goes on with it, "
                f"`streamer recover {anchor}` finishes it as it is")
    return FileRunOutputs(settings.out, settings.detections, identity, options, plan, say)


def kept_error(err, outputs) -> SinkError:
    """An output that could not be written: the run's partials are left for --resume / recover, and
    the error says where they are and what to do."""
    outputs.abandon()
    kept = outputs.describe_partials()
    if not kept:
        return err
    return SinkError(f"{err}; what was written is kept, playable, in {kept}: make room and run the same command "
                     f"with --resume to go on, or `streamer recover {outputs.manifest.anchor}` to finish it as it is")


def finish_outputs(outputs) -> None:
    """Join the video's parts into --out and move the log into place (nothing without outputs)."""
    if outputs is None:
        return
    from .recording.files import OutputFailed

    with interrupts.critical():
        try:
            outputs.finish()
        except OutputFailed as err:
            raise kept_error(err, outputs) from err


def report_model(info: contract.ModelInfo, client) -> dict:
    from .report import model_json

    return model_json(info, served_model=client.model, transport=str(client.transport))


def counts_of(events):
    """An event stage's counts when it has zones or lines (None otherwise)."""
    return events.counts() if events is not None and events.regions else None


def counts_part(counts) -> str:
    """The accounting line's counts: ` | counts door in 3 out 1, ...` ("" without zones or lines)."""
    from .report import counts_line

    return "" if counts is None else f" | counts {counts_line(counts)}"


def file_sample(name: str, pipeline, name_of, events=None):
    """A file run's counters as one camera's metrics sample (the file's name is the camera label)."""
    from .metrics import CameraSample

    stats = pipeline.stats
    return CameraSample(
        camera=name, captured=stats.read, shown=stats.written, inferred=stats.inferred, skipped=0,
        failed=stats.failed, reconnects=pipeline.inference.reconnects, camera_up=stats.finished is None,
        inference_up=pipeline.inference.state is InferenceState.ONLINE, frame_age_seconds=None,
        detections=by_name(stats.detections_by_class, name_of), latency=stats.latency, counts=counts_of(events))


def output_notes(statuses) -> List[str]:
    """Warnings about event outputs that dropped or failed events, or gave up."""
    from .events.types import OutputState

    notes = []
    for s in statuses:
        if s.dropped or s.failed or s.state is OutputState.GIVEN_UP:
            notes.append(f"WARNING: event output {s.name}: {s.state}, sent {s.sent}, dropped {s.dropped}, "
                         f"failed {s.failed}" + (f" ({s.reason})" if s.reason else ""))
    return notes


def _file_notes(stats, info: contract.ModelInfo, outputs: List[Path]) -> List[str]:
    """What a file run says on stderr after its accounting line."""
    notes = [f"wrote {path}" for path in outputs]
    if stats.failed:
        notes.append(f"WARNING: {stats.failed} frame(s) failed inference and were written unannotated "
                     f"(first error: {stats.first_error})")
    if stats.source_problem:
        notes.append(f"WARNING: input problem: {stats.source_problem}")
    if stats.interrupted:
        notes.append(f"interrupted: stopped after {stats.written} frame(s); the output holds what was processed")
    if stats.quit:
        notes.append(f"window closed: stopped after {stats.written} frame(s); the output holds what was processed")
    notes.extend(untrained_warning(info))
    return notes


# -- live cameras (streamer run on a live source, streamer watch) -----------------------------------

class _Camera:
    """One camera's parts while the run is being set up."""

    def __init__(self, settings: CameraSettings, spec, reader, capture):
        self.settings = settings
        self.spec = spec
        self.reader = reader
        self.capture = capture
        self.error: Optional[SourceError] = None


def check_outputs(settings: WatchSettings) -> None:
    """Fail before anything connects: a path used twice, a missing or unwritable folder (exit 5)."""
    from .recording.segments import check_segment_folder
    from .sinks import VIDEO_SUFFIXES, check_output_path

    check_folders(settings.events)
    segmented = {f"cameras.{cam.name}.record" for cam in settings.cameras if cam.segment is not None}
    seen = {}
    for where, path in settings.outputs:
        key = path.resolve()
        if key in seen:
            raise SinkError(f"{where} and {seen[key]} both write {path}; give each its own file")
        seen[key] = where
        suffixes = VIDEO_SUFFIXES if where.endswith(".record") else ()
        try:
            if where in segmented:
                check_segment_folder(path)
            else:
                check_output_path(path, settings.overwrite, suffixes=suffixes)
        except SinkError as err:
            raise SinkError(f"{where}: {err}") from err


def _connect_all(cameras: List[_Camera], say: Callable[[str], None]) -> None:
    """The first connection of every camera, at once (each has its own open timeout). A camera
    not reachable yet is retried once the run starts; one with an error retrying cannot fix
    (`cam.error`) is given up."""

    def connect(cam: _Camera) -> None:
        try:
            cam.capture.connect()
        except FinalSourceError as err:
            cam.error = err

    for cam in cameras:
        say(f"connecting to {cam.spec.name} ...")
    threads = [threading.Thread(target=connect, args=(cam,), daemon=True) for cam in cameras]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for cam in cameras:
        if cam.capture.connected_once:
            r = cam.reader
            size = f"{r.size[0]}x{r.size[1]}" if r.size else "size unknown"
            rate = f"{float(r.rate):.2f} fps" if r.rate else "fps unknown"
            kind = "file, played at its own pace" + (", looped" if cam.settings.loop else "") \
                if cam.spec.kind is SourceKind.FILE else "live"
            say(f"{cam.spec.name}: {kind}, {size}, {rate}")
        cam.reader.close()  # a live stream is not paused while the server starts: reopen when ready


def _open_cameras(settings: WatchSettings, say: Callable[[str], None]) -> List[_Camera]:
    from .capture import LiveCapture, make_reader
    from .sources import classify_source

    single = len(settings.cameras) == 1
    cameras: List[_Camera] = []
    for cam in settings.cameras:
        spec = classify_source(cam.source)
        if not single:
            spec = replace(spec, name=f"{cam.name} ({spec.name})")
        reader = make_reader(spec, settings.capture, loop=cam.loop, log=say)
        cameras.append(_Camera(cam, spec, reader, LiveCapture(spec, reader, settings.capture, log=say)))
    _connect_all(cameras, say)
    return cameras


def _camera_feed(cam: _Camera, info: contract.ModelInfo, label_ids, stack: contextlib.ExitStack, fanout=None,
                 draw_zones: bool = False, say: Callable[[str], None] = lambda message: None):
    """One camera's feed: its stages, annotators and sinks (entered on `stack`). A camera given
    up at its first connection gets a feed too (its tile, status, metrics and report say why),
    without sinks: it writes no file."""
    from .live import CameraFeed, LiveStats

    stats = LiveStats()
    rate = cam.reader.rate
    settings = cam.settings
    recording = parts.camera_recording(settings, info, rate, say) if cam.error is None else None
    sinks = [] if cam.error is not None else \
        [stack.enter_context(sink) for sink in parts.camera_sinks(settings, info, rate, stack, recording)
         + (fanout.frame_sinks(settings.name, lossless=False) if fanout is not None else [])]
    outputs = [str(path) for path in (settings.record, settings.detections) if path is not None]
    policy = parts.infer_policy(settings.rule, settings.tracking, cam.spec.kind)
    tracker = parts.live_tracker(settings, policy)
    events = parts.event_stage(settings.name, settings.regions, info.name_of, fanout, True, settings.tracking)
    regions = parts.region_annotators(events)
    return CameraFeed(
        name=settings.name, capture=cam.capture,
        stages=parts.camera_stages(settings, label_ids, lambda: stats.latency.recent()[-5:], tracker, events),
        annotators=parts.annotators(info) + (regions if draw_zones else []), sinks=sinks,
        max_frames=settings.max_frames, source_rate=float(rate) if rate else None, stats=stats, outputs=outputs,
        policy=policy, motion_drawer=parts.motion_drawer(settings.rule),
        tracks=(lambda: tracker.tracks_active) if tracker is not None else (lambda: 0),
        overlays=[] if draw_zones else regions, events=events,
        event_outputs=fanout.statuses if fanout is not None else (lambda: ()),
        recording=recording.status if recording is not None else (lambda: None))


def run_cameras(settings: WatchSettings, console: Console) -> RunReport:
    """Live cameras sharing one Triton: every frame shown and recorded, the newest inferred."""
    from .live import LivePipeline, total_line

    say = console.say
    started = time.monotonic()
    single = len(settings.cameras) == 1
    check_outputs(settings)
    if settings.show:
        from .window import Window

        Window.check_display()
    cameras = _open_cameras(settings, say)
    failed = [c for c in cameras if c.error is not None]  # errors retrying cannot fix: given up
    if single and failed:
        raise failed[0].error  # a wrong URL or password fails here, before the server starts
    for cam in failed:
        say(f"error: camera {cam.settings.name}: {cam.error} (the other cameras go on)")
    running = [c for c in cameras if c.error is None]  # open, or not reachable yet (retried)
    if not running:
        raise SourceError(f"none of the {len(cameras)} cameras could be opened (see above)")
    status_every = settings.status_every if settings.status_every is not None else (0 if settings.show else 10)
    stats_list = []
    broken_outputs = None  # the note about boxes the codecs dropped (not finite numbers)
    report = RunReport(command="watch")
    try:
        with opened_event_outputs(settings.events, say) as fanout, \
                triton_session(settings.server, say, live=True) as (client, info, server):
            label_ids = {}
            for cam in cameras:
                where = "--classes" if single else f"cameras.{cam.settings.name}.classes"
                label_ids[cam.settings.name] = label_filter(info, cam.settings.selection.classes, where)
                check_region_classes(info, cam.settings.regions)
            warn_untrained(info, say)
            stream = inference_for(settings.server, client, server, settings.inference, True, say)
            with contextlib.ExitStack() as stack:
                feeds = [_camera_feed(cam, info, label_ids[cam.settings.name], stack, fanout, settings.draw_zones, say)
                         for cam in cameras]
                title = f"streamer: {cameras[0].spec.name}" if single else f"streamer: {len(feeds)} cameras"
                displays = open_displays(parts.displays(settings.show, title), settings.web, info, stack, say)
                pipeline = LivePipeline(feeds=feeds, inference=stream, displays=displays, status_every=status_every,
                                        log=say, event_outputs=fanout.statuses)
                samples = lambda: [live_sample(feed, stream, info.name_of) for feed in feeds]  # noqa: E731
                try:
                    with metrics_endpoint(settings.metrics, samples, say, fanout.statuses), contextlib.closing(stream):
                        stats_list = pipeline.run()
                finally:
                    with interrupts.critical():
                        stack.close()
            for cam, stats, feed in zip(cameras, stats_list, feeds):
                line = stats.line() + counts_part(counts_of(feed.events))
                line = line if single else f"camera {cam.settings.name} | {line}"
                report.lines.append(line if not single else f"{line} | model {info.describe()}")
            if not single:
                report.lines.append(
                    f"total ({len(stats_list)} cameras) | {total_line(stats_list)} | model {info.describe()}")
            report.model = report_model(info, client)
            report.servers, report.moved, report.moved_slow = (servers_json(stream.servers()), stream.moved,
                                                               stream.moved_slow)
            report.streams = [stats.report(feed.name, by_name(feed.detections_by_class, info.name_of))
                              for feed, stats in zip(feeds, stats_list)]
            for stream_report, feed in zip(report.streams, feeds):
                counted = counts_of(feed.events)
                stream_report.counts = None if counted is None else counted.to_json()
            broken_outputs = client.outputs.summary()
            report.invalid_boxes = client.outputs.rows
    finally:
        for cam in cameras:
            cam.capture.stop()
            cam.reader.close()
    notes = report.notes
    for cam in running:
        for path in (cam.settings.record, cam.settings.detections):
            if path is not None and path.exists():
                notes.append(f"wrote {path}")
    for _, path in settings.events.outputs:
        if path.exists():
            notes.append(f"wrote {path}")
    report.event_outputs = [status.to_json() for status in fanout.statuses()]  # closed by now: final counts
    if report.event_outputs:
        notes.extend(output_notes(fanout.statuses()))
    quit_ = any(s.quit for s in stats_list)
    interrupted = any(s.interrupted for s in stats_list)
    if quit_:
        notes.append("window closed by the user")
    for cam, stats in zip(cameras, stats_list):
        if stats.failed:
            prefix = "" if single else f"camera {cam.settings.name}: "
            notes.append(f"WARNING: {prefix}inference failed on {stats.failed} frame(s) "
                         f"(first error: {stats.first_error})")
    notes.extend(untrained_warning(info))
    notes.extend(note for note in [broken_outputs] if note)
    lost = [cam for cam in running if cam.capture.error is not None]
    for cam in lost:
        notes.append(f"error: {cam.capture.error}" if single else f"error: camera {cam.settings.name}: {cam.capture.error}")
    unrecorded = [(cam, stats.recording) for cam, stats in zip(cameras, stats_list)
                  if stats.recording is not None and not stats.recording.ok]
    for cam, status in unrecorded:
        notes.append(f"error: camera {cam.settings.name}: {status.not_recorded} frame(s) were not recorded "
                     f"({status.reason or status.last_failure or 'the output could not be written'})")
    report.elapsed_s = time.monotonic() - started
    if single and lost:
        report.exit_code = lost[0].capture.error.exit_code
    elif interrupted:
        report.exit_code = ExitCode.INTERRUPTED
    elif lost or failed:
        report.exit_code = ExitCode.SOURCE
    elif unrecorded:
        report.exit_code = ExitCode.SINK
    else:
        report.exit_code = ExitCode.OK
    return report


def live_sample(feed, stream, name_of):
    """One camera's counters as a metrics sample (read at scrape time)."""
    from .metrics import CameraSample

    s = feed.stats
    return CameraSample(
        camera=feed.name, captured=s.captured, shown=s.shown, inferred=s.inferred, skipped=feed.skipped_now,
        failed=s.failed, reconnects=feed.capture.reconnects, camera_up=feed.capture.state is CaptureState.LIVE,
        inference_up=stream.state is InferenceState.ONLINE, frame_age_seconds=feed.frame_age,
        detections=by_name(feed.detections_by_class, name_of), latency=s.latency, tracks_active=feed.tracks(),
        counts=counts_of(feed.events), motion=feed.motion, skipped_by_reason=feed.skipped_by_now())


def watch_command(settings: WatchSettings, console: Console) -> RunReport:
    return run_cameras(settings, console)
