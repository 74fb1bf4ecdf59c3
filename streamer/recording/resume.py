"""Resumable file runs: what a run leaves beside its outputs, and how `--resume` goes on from it.

A file run with `--out` and/or `--detections` writes, beside the first of them (the anchor):

    .NAME.partial-RUNID.json        the manifest: the input (size and hashes of its ends), the
                                    options that change the output, the parts of the video
    .NAME.partial-RUNID.mp4         the video, fragmented (one part per run that wrote it)
    .NAME.partial-RUNID.jsonl       the detections log (beside --detections)
    .NAME.partial-RUNID.state/      checkpoints: the stages' state (the tracker) at resume points

**Resume points.** About once a second of video (`KEY_EVERY_S`), at a frame after which the stages
hold nothing back (every frame given to them was written: with `--infer-every N`, right after an
inferred frame), the run saves a checkpoint (the stage chain as it is after that frame, the
schedule's cut detector, the mp4's clock) and asks the mp4 to start a keyframe, so a fragment ends
exactly there. A killed run can go on from frame S when a checkpoint of frame S-1 exists, the
video holds a fragment starting at S (or ends there) and the log holds S records.

**Resuming.** `run ... --resume` finds the newest manifest of its outputs that no running streamer
holds, checks that it was written for the same input and the same options (else one line, exit 2),
cuts the log and the video back to the latest such S, and runs on from S: frames before S are
decoded and dropped (every frame keeps its index, PTS and audio), the stages start from the
checkpoint (the tracker's tracks, ids, motion model and last picture: exactly where the killed run
had them), the video goes on in a new part, the log is appended to. At the end the parts are joined
into one moov-first mp4: every frame once, in order, with the same timestamps and the same
detections as a run that was never killed. The video's pictures are those of a fresh x264 encoder
from S on (equal within encoder tolerance, not bit for bit); transcoded audio restarts its encoder
at S (copied audio is exact).

Checkpoints are Python pickles of the tracker's own objects; they are read back only through an
unpickler that admits the tracker's and the selection's classes, numpy arrays and a few builtins.
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
from .files import OutputFailed, finishing_path, is_locked, new_run_id, parse_partial, partial_path
from .fragments import scan
from .lines import trim_torn_tail

VERSION = 1
KEEP_CHECKPOINTS = 8  # a kill loses at most ~1.5 s: the last few checkpoints cover it
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
    log: Optional[str] = None  # the detections log's partial (a name, beside `detections`)
    version: int = VERSION
    home: Path = field(default=Path("."), compare=False)

    @classmethod
    def new(cls, run_id: str, identity: dict, options: dict, out: Optional[Path],
            detections: Optional[Path]) -> "Manifest":
        anchor = Path(out or detections)
        home = anchor.parent if str(anchor.parent) else Path(".")
        return cls(run_id, identity, options, anchor.name if out else None,
                   os.path.relpath(detections, home) if detections else None,
                   log=partial_path(Path(detections), run_id).name if detections else None, home=home)

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

    def log_path(self) -> Optional[Path]:
        return self.detections_path().parent / self.log if self.log and self.detections else None

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


def manifests_for(anchor: Path) -> List[Path]:
    """The manifests beside `anchor` that no running streamer holds, newest first."""
    found = []
    folder = anchor.parent if str(anchor.parent) else Path(".")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for path in entries:
        partial = parse_partial(path)
        if partial is not None and path.suffix == ".json" and partial.target.stem == anchor.stem \
                and not is_locked(path):
            found.append((partial.run_id, path))
    return [path for _, path in sorted(found, reverse=True)]


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
    cuts: object = None  # the inference schedule's cut detector (tracking.CutDetector), or None
    first_pts: Optional[int] = None  # the mp4's clock: the source PTS that is its 0
    last_pts: Optional[int] = None  # ... and the output PTS of this frame


_SAFE_MODULES = ("streamer.tracking.", "streamer.selection", "streamer.frames", "streamer.recording.resume")
_SAFE_FUNCTIONS = {("streamer.tracking.file_stage", "media_time")}
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
            with open(temp, "wb") as f:
                pickle.dump(checkpoint, f, protocol=pickle.HIGHEST_PROTOCOL)
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
    """Where a resumed run starts (`start`: its first frame), from which manifest and checkpoint."""

    manifest: Manifest
    start: int
    checkpoint: Optional[Checkpoint]
    kept_records: int
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
    """Find the latest resume point S and cut the log and the video parts back to it."""
    log = manifest.log_path()
    records: List[dict] = []
    if log is not None:
        found = trim_torn_tail(log) if log.exists() else None
        records = found.records if found is not None else []
        if found is not None and found.torn:
            say(f"note: {found.torn}")
    limit_log = len(records) if log is not None else None
    starts = set()
    scans: List[Optional[object]] = []
    for part, path in zip(manifest.parts, manifest.part_paths()):
        found = None
        if not scans or scans[-1] is not None:  # a part that cannot be read ends the usable ones
            try:
                found = scan(path)
            except (OSError, ValueError):
                pass
        scans.append(found)
        if found is not None:
            first = int(part["first"])
            starts.update(found.starts(first))
            starts.add(first + found.frames)
    checkpoints = Checkpoints(manifest.state_dir())
    start = 0
    for frame in reversed(checkpoints.frames()):
        candidate = frame + 1
        if limit_log is not None and candidate > limit_log:
            continue
        if manifest.out is not None and candidate not in starts:
            continue
        start = candidate
        break
    checkpoint = None
    if start:
        try:
            checkpoint = checkpoints.load(start - 1)
        except (OSError, pickle.UnpicklingError, AttributeError, EOFError, ValueError, TypeError) as err:
            say(f"note: --resume: the checkpoint of frame {start - 1} cannot be read ({err}); starting over")
            start, checkpoint = 0, None
    # cut everything back to `start`
    if log is not None and log.exists():
        trim_torn_tail(log, keep=start)
    kept_parts = []
    for part, path, found in zip(manifest.parts, manifest.part_paths(), scans):
        first = int(part["first"])
        if found is None or first >= start:
            path.unlink(missing_ok=True)
            continue
        end = first + found.frames
        if start < end:
            os.truncate(path, found.offset_of(start, first))
        elif found.torn:
            os.truncate(path, found.whole_end)
        kept_parts.append(part)
    manifest.parts = kept_parts
    checkpoints.drop_after(start - 1)
    failed = sum(1 for r in records[:start] if r.get("status") == "failed")
    return ResumePlan(manifest, start, checkpoint, start if log is not None else 0, failed)


# -- the outputs of a resumable file run ------------------------------------------------------------------

class FileRunOutputs:
    """The `--out` / `--detections` of a file run, written so that a kill can be resumed.

    Made by the runner once the input and the model are known; `sinks()` are the run's sinks
    (a new video part, the log appended to); `settled(frame)` is the pipeline's call after each
    frame written with nothing held back (the checkpoints); `finish()` joins the parts and moves
    the files into place; `abandon()` (an output could not be written) leaves every partial for
    `--resume` or `streamer recover`.
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
            self.manifest.parts.append({"file": part.name, "first": self.start})
        self.checkpoints = Checkpoints(self.manifest.state_dir())
        self.mp4 = None
        self.log = None
        self.stages = None
        self.cuts = None
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

    @property
    def checkpoint(self) -> Optional[Checkpoint]:
        return self.plan.checkpoint if self.plan is not None else None

    def sinks(self, mp4_factory, log_factory) -> list:
        """The run's sinks: `mp4_factory(partial, first_pts, last_pts)` and `log_factory(partial, append)`."""
        found = []
        ckpt = self.checkpoint
        if self.out is not None:
            part = self.manifest.part_paths()[-1]
            self.mp4 = mp4_factory(part, ckpt.first_pts if ckpt else None, ckpt.last_pts if ckpt else None)
            found.append(self.mp4)
        if self.detections is not None:
            self.log = log_factory(self.manifest.log_path(), self.start > 0)
            self.log.abandon()  # moved into place by finish(), once the video is
            found.append(self.log)
        return found

    def watch(self, stages, cuts) -> None:
        """The stage chain (and the schedule's cut detector) whose state the checkpoints keep."""
        self.stages, self.cuts = stages, cuts

    def settled(self, frame: Frame) -> None:
        """After `frame` was written with nothing held back: a checkpoint, about once a second of
        video, and a keyframe on the next frame so that a fragment ends here."""
        from ..sinks import KEY_EVERY_S

        now = frame.time if frame.time is not None else frame.index / 30.0
        if self._last_checkpoint is None:
            self._last_checkpoint = now  # the run's first frame is its own resume point
            return
        if now - self._last_checkpoint < KEY_EVERY_S or self._checkpoints_failed:
            return
        self._last_checkpoint = now
        mp4 = self.mp4
        try:
            self.checkpoints.save(Checkpoint(frame.index, self.stages, self.cuts,
                                             mp4.first_pts if mp4 is not None else None,
                                             mp4.last_pts if mp4 is not None else None))
        except OutputFailed as err:  # the outputs may still be written: say it, and go on without
            self._checkpoints_failed = True
            self.say(f"WARNING: {err}: this run cannot be resumed from here on (its outputs are still written)")
            return
        if mp4 is not None:
            mp4.key_next()

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
        if log is not None and log.exists():
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
        log = self.manifest.log_path()
        if log is not None and log.exists():
            kept.append(log.name)
        return ", ".join(kept)


def restored_stages(plan: Optional[ResumePlan]):
    """(stages, the schedule's cut detector) from a plan's checkpoint, or (None, None). The cut
    detector is a copy: in the checkpoint it is the tracker's own, which must go on separately."""
    if plan is None or plan.checkpoint is None:
        return None, None
    return plan.checkpoint.stages, copy.deepcopy(plan.checkpoint.cuts)


class SkipFrames:
    """A source whose frames before `start` are decoded and dropped (a resumed run): every later
    frame keeps its index, PTS and audio as in the run that was killed."""

    def __init__(self, source, start: int):
        self.source = source
        self.start = start

    @property
    def problem(self) -> Optional[str]:
        return self.source.problem

    def frames(self) -> Iterator[Frame]:
        for frame in self.source.frames():
            if frame.index >= self.start:
                yield frame


def run_options(threshold: float, classes, tracking_enabled: bool, infer_every: int, audio: bool,
                max_frames: Optional[int], model: Dict) -> dict:
    """The options a resumed run must share with the killed one (they change the output)."""
    return {"threshold": threshold, "classes": sorted(classes) if classes is not None else None,
            "track": tracking_enabled, "infer_every": infer_every, "audio": audio, "max_frames": max_frames,
            "model": model}
