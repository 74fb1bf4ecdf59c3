"""Resumable file runs: what a run leaves beside its outputs, and how `--resume` goes on from it.

A file run with `--out` and/or `--detections` writes, beside the first of them (the anchor):

    .NAME.partial-RUNID.json        the manifest: the input (size and hashes of its ends), the
                                    options that change the output, the parts of the video
    .NAME.partial-RUNID.mp4         the video, fragmented (one part per run that wrote it)
    .NAME.partial-RUNID.jsonl       the detections log (beside --detections; without it, a hidden
                                    log of its own that the finished run removes)
    .NAME.partial-RUNID.state/      checkpoints: the stages' state (the tracker) at resume points

**Resume points.** About once a second of video (`KEY_EVERY_S`), at a frame after which the stages
hold nothing back (every frame given to them was written: with `--infer-every N`, right after an
inferred frame), the run saves a checkpoint: the stage chain as it is after that frame (the
tracker's tracks, ids, motion model, last picture and cut detector) and the mp4's clock. Every
record of the log reaches the disk as it is written, so the latest checkpoint C is always a resume
point: the run goes on from S = C + 1.

**Resuming.** `run ... --resume` finds the newest manifest of its outputs that no running streamer
holds, checks that it was written for the same input and the same options (else one line, exit 2),
and cuts the log back to S records and the video back to its last keyframe K <= S (a fragment
starts there; keyframes come every second of video, by the timeline alone, as in any run). Then it
runs on: frames before K are decoded and dropped (every frame keeps its index, PTS and audio), the
frames K..S-1 are drawn again from the log (which holds exactly what was drawn: `render`'s rule) into
a new video part, and from S on the stages go on from the checkpoint, exactly where the killed run
had them, and the log is appended to. At the end the parts are joined into one moov-first mp4:
every frame once, in order, with the same timestamps and the same detections as a run that was
never killed. The video's pictures from K on are a fresh x264 encoder's (equal within encoder
tolerance, not bit for bit); transcoded audio restarts its encoder at K (copied audio is exact).

Checkpoints are Python pickles of the stage chain's own objects; they are read back only through an
unpickler that admits the tracker's and the selection's classes, numpy arrays and a few builtins
(`_SAFE_MODULES`): a stage added to the file chain must pickle, and its module be listed there, for
an exact resume (otherwise a resume starts over, with a note).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import io
import json
import os
import pickle
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from ..errors import ExitCode, SinkError, StreamerError
from ..frames import Frame
from .files import OutputFailed, finishing_path, is_locked, new_run_id, partial_path, partials_of
from .fragments import scan
from .lines import trim_torn_tail

VERSION = 1
KEEP_CHECKPOINTS = 3  # the latest is the resume point (the log reaches the disk record by record)
HASHED = 1 << 20  # bytes hashed at each end of the input

Say = Callable[[str], None]


class ResumeRefused(StreamerError):
    """`--resume` found partial outputs written for another input or other options."""

    exit_code = ExitCode.USAGE


# -- the manifest --------------------------------------------------------------------------------

def input_identity(path: Path) -> dict:
    """What tells the input from another file: its size and the sha256 of its first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(HASHED)).hexdigest()
        f.seek(max(0, size - HASHED))
        tail = hashlib.sha256(f.read(HASHED)).hexdigest()
    return {"name": path.name, "size": size, "head": head, "tail": tail}


@dataclass
class Manifest:
    """What a resumable run writes beside its outputs (see the module docstring). `out` and
    `detections` are the outputs' paths relative to the manifest's folder (`home`, not written),
    so the folder may move between the kill and the resume."""

    run_id: str
    input: dict
    options: dict
    out: Optional[str]
    detections: Optional[str]
    parts: List[dict] = field(default_factory=list)  # {"file": partial name beside out, "first": frame index}
    log: Optional[str] = None  # the log's partial (a name, beside `detections`, else beside `out`)
    version: int = VERSION
    home: Path = field(default=Path("."), compare=False)

    @classmethod
    def new(cls, run_id: str, identity: dict, options: dict, out: Optional[Path],
            detections: Optional[Path]) -> "Manifest":
        anchor = Path(out or detections)
        home = anchor.parent if str(anchor.parent) else Path(".")
        return cls(run_id, identity, options, anchor.name if out else None,
                   os.path.relpath(detections, home) if detections else None,
                   log=partial_path(Path(detections or out), run_id, ".jsonl").name, home=home)

    def out_path(self) -> Optional[Path]:
        return self.home / self.out if self.out else None

    def detections_path(self) -> Optional[Path]:
        return self.home / self.detections if self.detections else None

    @property
    def anchor(self) -> Path:
        return self.home / (self.out or self.detections)

    def path(self) -> Path:
        return partial_path(self.anchor, self.run_id, ".json")

    def state_dir(self) -> Path:
        return partial_path(self.anchor, self.run_id, ".state")

    def part_paths(self) -> List[Path]:
        return [self.home / part["file"] for part in self.parts]

    def log_path(self) -> Path:
        """The log's partial (beside --detections; without it, the run's own hidden log beside --out)."""
        return (self.detections_path() or self.anchor).parent / self.log

    def write(self) -> None:
        """Replace the manifest on disk (a whole new file, then renamed over the old one)."""
        data = {k: v for k, v in asdict(self).items() if k != "home"}
        temp = self.path().with_name(self.path().name + ".new")
        temp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(temp, self.path())

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        path = Path(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            raise ValueError(f"{path.name}: written by another version of streamer")
        return cls(**{k: data[k] for k in ("run_id", "input", "options", "out", "detections", "parts", "log",
                                            "version")}, home=path.parent)


def manifests_for(anchor: Path, locked: bool = False) -> List[Path]:
    """The manifests beside `anchor` that no running streamer holds (`locked`: those one holds),
    newest first."""
    found = [p for p in partials_of(anchor, suffix=".json") if is_locked(p.path) == locked]
    return [p.path for p in reversed(found)]


class ManifestLock:
    """The run's hold on its manifest (an flock on it, dropped by the kernel when the process dies),
    so another `--resume` or `streamer recover` leaves a live run's partials alone."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# -- checkpoints -----------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """The state of a file run right after frame `frame` was written, with nothing held back."""

    frame: int
    stages: object  # the selection chain (selection.Chain), tracker included
    policy: object = None  # which frames go to the model (policy.InferPolicy: cuts, motion, the re-check)
    first_pts: Optional[int] = None  # the mp4's clock: the source PTS that is its 0


_SAFE_MODULES = ("streamer.tracking.", "streamer.selection", "streamer.frames", "streamer.recording.resume",
                 "streamer.policy", "streamer.motion", "streamer.grey", "streamer.states")
_SAFE_FUNCTIONS = {("streamer.tracking.file_stage", "media_time"), ("streamer.policy", "no_moving_tracks")}
_SAFE_OTHERS = {
    ("collections", "deque"), ("collections", "OrderedDict"), ("fractions", "Fraction"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    *(("builtins", name) for name in ("set", "frozenset", "slice", "complex", "bytearray", "tuple", "list", "dict")),
}


class _Unpickler(pickle.Unpickler):
    """Admits only the classes a checkpoint holds (see _SAFE_*): a planted file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_OTHERS or (module, name) in _SAFE_FUNCTIONS:
            return super().find_class(module, name)
        if module.startswith(_SAFE_MODULES) or module in _SAFE_MODULES:
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"a checkpoint may not hold {module}.{name}")


class Checkpoints:
    """`.NAME.partial-RUNID.state/FRAME.ckpt`: the last KEEP_CHECKPOINTS checkpoints of a run."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def frames(self) -> List[int]:
        try:
            return sorted(int(p.stem) for p in self.folder.glob("*.ckpt") if p.stem.isdigit())
        except OSError:
            return []

    def save(self, checkpoint: Checkpoint) -> None:
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"{checkpoint.frame:09d}.ckpt"
        temp = path.with_suffix(".new")
        try:
            data = pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as err:  # a stage that holds a thread, a socket...
            raise OutputFailed(path, f"the stages cannot be saved ({err})") from err
        try:
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        except OSError as err:
            temp.unlink(missing_ok=True)
            raise OutputFailed(path, err.strerror or str(err)) from err
        for old in self.frames()[:-KEEP_CHECKPOINTS]:
            (self.folder / f"{old:09d}.ckpt").unlink(missing_ok=True)

    def load(self, frame: int) -> Checkpoint:
        data = (self.folder / f"{frame:09d}.ckpt").read_bytes()
        found = _Unpickler(io.BytesIO(data)).load()
        if not isinstance(found, Checkpoint) or found.frame != frame:
            raise pickle.UnpicklingError(f"checkpoint {frame} does not hold frame {frame}")
        return found

    def drop_after(self, frame: int) -> None:
        for later in self.frames():
            if later > frame:
                (self.folder / f"{later:09d}.ckpt").unlink(missing_ok=True)


# -- planning a resume ---------------------------------------------------------------------------------

@dataclass
class ResumePlan:
    """Where a resumed run starts: the stages go on from `start` (with `checkpoint`); the video from
    `redraw_from` (a keyframe), its frames before `start` drawn from `records` (the log's, by index)."""

    manifest: Manifest
    start: int
    redraw_from: int
    checkpoint: Optional[Checkpoint]
    records: List[dict]
    failed_before: int  # records of the kept log whose inference had failed


def _differences(found: Manifest, identity: dict, options: dict) -> List[str]:
    if {k: found.input.get(k) for k in ("size", "head", "tail")} != {k: identity[k] for k in ("size", "head", "tail")}:
        return [f"it was written for another input ({found.input.get('name')}, {found.input.get('size')} bytes)"]
    changed = [f"{key} {found.options.get(key)!r} then, {options.get(key)!r} now"
               for key in sorted(set(found.options) | set(options)) if found.options.get(key) != options.get(key)]
    return [f"it was written with other options ({'; '.join(changed)})"] if changed else []


def plan_resume(anchor: Path, identity: dict, options: dict, out: Optional[Path], detections: Optional[Path],
                say: Say) -> Optional[ResumePlan]:
    """The resume of the newest killed run of these outputs, its files cut back to the resume point
    (None: there is none; ResumeRefused: it is another input's or other options')."""
    candidates = manifests_for(anchor)
    if not candidates:
        say(f"note: --resume: no unfinished run of {anchor} was found; starting from the first frame")
        return None
    try:
        manifest = Manifest.read(candidates[0])
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ResumeRefused(f"--resume: {candidates[0]} cannot be read ({err}); remove it or run without --resume")
    problems = _differences(manifest, identity, options)
    if (manifest.out is None) != (out is None) or (manifest.detections is None) != (detections is None):
        problems.append("it wrote " + " and ".join(n for n in ("--out" if manifest.out else None,
                                                                "--detections" if manifest.detections else None) if n))
    if problems:
        raise ResumeRefused(f"--resume: the unfinished run beside {anchor} ({candidates[0].name}) cannot be continued: "
                            f"{problems[0]}; run with the same input and options, or without --resume to start over")
    return _cut_back(manifest, say)


def _cut_back(manifest: Manifest, say: Say) -> ResumePlan:
    """Find the resume point S (after the latest checkpoint the log covers) and the video's last
    keyframe K <= S, and cut the log back to S records and the video parts back to K."""
    log = manifest.log_path()
    found = trim_torn_tail(log) if log.exists() else None
    records = found.records if found is not None else []
    if found is not None and found.torn:
        say(f"note: {found.torn}")
    if [r.get("frame") for r in records] != list(range(len(records))):
        records = []  # not this run's log after all: start over
    checkpoints = Checkpoints(manifest.state_dir())
    start, checkpoint = 0, None
    for frame in reversed(checkpoints.frames()):
        if frame + 1 > len(records):
            continue
        try:
            checkpoint = checkpoints.load(frame)
        except (OSError, pickle.UnpicklingError, AttributeError, EOFError, ValueError, TypeError) as err:
            say(f"note: --resume: the checkpoint of frame {frame} cannot be read ({err})")
            continue
        start = frame + 1
        break
    scans = []
    for path in manifest.part_paths():
        usable = not scans or scans[-1] is not None  # a part that cannot be read ends the usable ones
        try:
            scans.append(scan(path) if usable else None)
        except (OSError, ValueError):
            scans.append(None)
    keys = [0]  # the frames a fragment starts at (each a keyframe), and where the whole video ends
    for part, found_part in zip(manifest.parts, scans):
        if found_part is not None:
            keys += found_part.starts(int(part["first"])) + [int(part["first"]) + found_part.frames]
    redraw_from = max(k for k in keys if k <= start) if manifest.out is not None else start
    if log.exists():
        trim_torn_tail(log, keep=start)
    kept_parts = []
    for part, path, found_part in zip(manifest.parts, manifest.part_paths(), scans):
        first = int(part["first"])
        if found_part is None or first >= redraw_from:
            path.unlink(missing_ok=True)
            continue
        if redraw_from < first + found_part.frames:
            os.truncate(path, found_part.offset_of(redraw_from, first))
        elif found_part.torn:
            os.truncate(path, found_part.whole_end)
        kept_parts.append(part)
    manifest.parts = kept_parts
    checkpoints.drop_after(start - 1)
    failed = sum(1 for r in records[:start] if r.get("status") == "failed")
    return ResumePlan(manifest, start, redraw_from, checkpoint, records[redraw_from:start], failed)


# -- the outputs of a resumable file run ------------------------------------------------------------------

class FileRunOutputs:
    """The `--out` / `--detections` of a file run, written so that a kill can be resumed.

    Made by the runner once the input and the model are known; `sinks()` are the run's sinks
    (a new video part, the log appended to); `source()` hands on the input's frames from the resume
    point, having drawn the video's frames since its last keyframe again; `settled(frame)` is the
    pipeline's call after each frame written with nothing held back (the checkpoints); `finish()`
    joins the parts and moves the files into place; `abandon()` (an output could not be written)
    leaves every partial for `--resume` or `streamer recover`.
    """

    def __init__(self, out: Optional[Path], detections: Optional[Path], identity: dict, options: dict,
                 plan: Optional[ResumePlan], say: Say):
        self.out = Path(out) if out is not None else None
        self.detections = Path(detections) if detections is not None else None
        self.say = say
        self.run_id = new_run_id()
        self.plan = plan
        if plan is not None:
            self.manifest = plan.manifest
        else:
            self.manifest = Manifest.new(self.run_id, identity, options, self.out, self.detections)
        if self.out is not None:
            part = partial_path(self.out, self.run_id)
            self.manifest.parts.append({"file": part.name, "first": plan.redraw_from if plan else 0})
        self.checkpoints = Checkpoints(self.manifest.state_dir())
        self.mp4 = None
        self.log = None
        self.stages = None
        self.policy = None
        self._last_checkpoint: Optional[float] = None
        self._checkpoints_failed = False
        self._lock: Optional[ManifestLock] = None
        self.manifest.write()
        try:
            self._lock = ManifestLock(self.manifest.path())
        except OSError as err:
            raise SinkError(f"{self.manifest.anchor}: another streamer run is writing these outputs "
                            f"({err.strerror})") from err

    @property
    def start(self) -> int:
        return self.plan.start if self.plan is not None else 0

    def sinks(self, mp4_factory, log_factory) -> list:
        """The run's sinks: the video's new part, `mp4_factory(partial, first_pts)`, and the log,
        `log_factory(target, partial, append)` (a run without --detections keeps a hidden log of its
        own: a resume draws the frames since the video's last keyframe from it)."""
        found = []
        plan = self.plan
        if self.out is not None:
            first_pts = plan.checkpoint.first_pts if plan is not None and plan.checkpoint is not None else None
            self.mp4 = mp4_factory(self.manifest.part_paths()[-1], first_pts)
            found.append(self.mp4)
        self.log = log_factory(self.detections or self.manifest.log_path(), self.manifest.log_path(), self.start > 0)
        self.log.abandon()  # moved into place (or removed) by finish(), once the video is finished
        found.append(self.log)
        return found

    def source(self, source, draw: Callable[[Frame, object], object]):
        """The input from the resume point on: frames before the video's last keyframe are decoded and
        dropped, the ones from it to the resume point drawn again from the log into the video."""
        if self.plan is None or not self.start:
            return source
        return ResumedSource(source, self.plan, lambda frame, detections: self.mp4.write(
            frame, draw(frame, detections), detections))

    def watch(self, stages, policy) -> None:
        """The stage chain (and the inference policy) whose state the checkpoints keep."""
        self.stages, self.policy = stages, policy

    def without_checkpoints(self) -> None:
        """A run whose state cannot be saved (its event stage: counts, open events and the outputs they
        went to): no checkpoints, so a `--resume` of it starts over (exact, not quicker)."""
        self._checkpoints_failed = True

    def settled(self, frame: Frame) -> None:
        """After `frame` was written with nothing held back: a checkpoint, about once a second of video."""
        from ..sinks import KEY_EVERY_S

        now = frame.time if frame.time is not None else frame.index / 30.0
        if self._last_checkpoint is None:
            self._last_checkpoint = now  # the run's first frame is its own resume point
            return
        if now - self._last_checkpoint < KEY_EVERY_S or self._checkpoints_failed:
            return
        self._last_checkpoint = now
        try:
            self.checkpoints.save(Checkpoint(frame.index, self.stages, self.policy,
                                             self.mp4.first_pts if self.mp4 is not None else None))
        except OutputFailed as err:  # the outputs may still be written: say it, and go on without
            self._checkpoints_failed = True
            self.say(f"WARNING: {err}: this run cannot be resumed from here on (its outputs are still written)")

    def finish(self) -> None:
        """Join the video parts into --out, move the log into place, remove the run's partials."""
        from .fragments import join

        if self.out is not None:
            parts = [p for p in self.manifest.part_paths() if p.exists()]
            if parts and any(scan(p).frames for p in parts):
                join(parts, self.out, finishing_path(parts[-1]))
            for part in parts:
                part.unlink(missing_ok=True)
        log = self.manifest.log_path()
        if self.detections is None:
            log.unlink(missing_ok=True)
        elif log.exists():
            try:
                os.replace(log, self.detections)
            except OSError as err:
                raise OutputFailed(self.detections, err.strerror or str(err), log) from err
        self._remove()

    def abandon(self) -> None:
        """Leave every partial (and the manifest) for `--resume` or `streamer recover`."""
        for sink in (self.mp4, self.log):
            if sink is not None:
                sink.abandon()
        self._release()

    def _remove(self) -> None:
        shutil.rmtree(self.manifest.state_dir(), ignore_errors=True)
        self._release()
        self.manifest.path().unlink(missing_ok=True)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def describe_partials(self) -> str:
        kept = [p.name for p in self.manifest.part_paths() if p.exists()]
        if self.detections is not None and self.manifest.log_path().exists():
            kept.append(self.manifest.log_path().name)
        return ", ".join(kept)


def restored_stages(plan: Optional[ResumePlan]):
    """(stages, the inference policy) from a plan's checkpoint, or (None, None): both as the killed
    run had them (the policy's cut test, motion background and re-check clock included)."""
    if plan is None or plan.checkpoint is None:
        return None, None
    return plan.checkpoint.stages, copy.deepcopy(plan.checkpoint.policy)


class ResumedSource:
    """A resumed run's input (see FileRunOutputs.source): frames before the plan's `redraw_from` are
    decoded and dropped, those up to its `start` go to `redraw(frame, detections)` with the
    detections the log holds for them, and the rest are handed on. Every frame keeps its index, PTS
    and audio; a frame whose PTS differs from the log's means the input is not the killed run's."""

    def __init__(self, source, plan: ResumePlan, redraw: Callable[[Frame, object], None]):
        self.source = source
        self.plan = plan
        self.redraw = redraw

    @property
    def problem(self) -> Optional[str]:
        return self.source.problem

    def frames(self) -> Iterator[Frame]:
        from ..detlog import decode

        plan = self.plan
        for frame in self.source.frames():
            if frame.index >= plan.start:
                yield frame
            elif frame.index >= plan.redraw_from:
                record = plan.records[frame.index - plan.redraw_from]
                if record.get("pts") != frame.pts:
                    raise ResumeRefused(f"--resume: frame {frame.index} has pts {frame.pts} in the input but "
                                        f"{record.get('pts')} in the log: not the input of the killed run")
                self.redraw(frame, decode(record))


def run_options(threshold: float, classes, tracking_enabled: bool, infer_every: int, audio: bool,
                max_frames: Optional[int], model: Dict, inference: Optional[Dict] = None) -> dict:
    """The options a resumed run must share with the killed one (they change the output).
    `inference`: which frames went to the model (--infer-on and the motion detector's settings)
    and what is drawn besides the boxes (--draw-zones), as plain values."""
    return {"threshold": threshold, "classes": sorted(classes) if classes is not None else None,
            "track": tracking_enabled, "infer_every": infer_every, "audio": audio, "max_frames": max_frames,
            "model": model, "inference": inference or {}}
