"""`streamer recover PATH`: what a killed run left, turned into finished files.

PATH may be an output's name (`a.mp4`, `a.jsonl`: its partials beside it are found), a partial
file itself (`.a.partial-RUNID.mp4`), or a folder: every camera segment folder below it (partial
segments finished and listed in its index) and every output whose partials lie in it.

- A file run's partials (with their manifest): the video parts are cut back to their whole
  fragments and joined into the output (moov first), the detections log is cut back to its whole
  lines and moved into place, the manifest and checkpoints are removed. (`run ... --resume`
  goes on from them instead.)
- A live recording's partial: cut back to its whole fragments and finished under its name.
- A partial that a running streamer holds (its writer's lock) is left alone.

An output that exists already is kept unless `overwrite`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, List

from ..errors import SinkError, SourceError
from .files import is_locked, parse_partial, partials_of
from .fragments import join, trim
from .lines import trim_torn_tail
from .resume import Manifest, manifests_for
from .segments import finish_partial, recover_segments

Say = Callable[[str], None]
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def recover(path: Path, overwrite: bool, say: Say) -> List[str]:
    """Finish what a kill left at `path` (see the module docstring). What was done, one line each;
    SourceError when nothing was found to recover."""
    path = Path(path)
    done: List[str] = []
    if path.is_dir():
        for folder in _camera_folders(path):
            done += [f"recovered {folder / name}" for name in recover_segments(folder, say)]
        claimed = set()
        for manifest_path in sorted(_walk(path, lambda p: p.suffix == ".json")):
            if is_locked(manifest_path):
                continue
            try:
                manifest = Manifest.read(manifest_path)
            except (OSError, ValueError, TypeError, KeyError) as err:
                say(f"note: {manifest_path} cannot be read ({err}); its partial files are finished one by one")
                continue
            claimed.update(manifest.part_paths())
            claimed.add(manifest.log_path())
            done += _recover_manifest(manifest, overwrite, say)
        targets = {parse_partial(p).target for p in _walk(path, lambda p: p.suffix in (".mp4", ".mov", ".m4v", ".jsonl"))
                   if p not in claimed}
        for target in sorted(targets):
            done += _recover_target(target, overwrite, say, quiet=True)
    else:
        partial = parse_partial(path)
        done += _recover_target(partial.target if partial is not None else path, overwrite, say)
    if not done:
        raise SourceError(f"nothing to recover at {path}: no partial files left by a streamer run "
                          "(or a running streamer still writes them)")
    return done


def _walk(root: Path, keep: Callable[[Path], bool]) -> List[Path]:
    """The partial files below `root` that `keep` picks, outside segment day folders."""
    found = []
    for folder, _dirs, files in os.walk(root):
        if _DAY.match(Path(folder).name):
            continue
        for name in files:
            path = Path(folder) / name
            if parse_partial(path) is not None and keep(path):
                found.append(path)
    return found


def _camera_folders(root: Path) -> List[Path]:
    """Folders holding day folders (YYYY-MM-DD) of segments, at or below `root`."""
    found = set()
    for folder, dirs, _files in os.walk(root):
        if any(_DAY.match(d) for d in dirs):
            found.add(Path(folder))
    return sorted(found)


def _check_free(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise SinkError(f"{target} exists; pass --overwrite to replace it with what the partial files hold")


def _recover_target(target: Path, overwrite: bool, say: Say, quiet: bool = False) -> List[str]:
    """The partials of one output: a file run's (with its manifest), else the newest partial."""
    target = Path(target)
    claimed = set()  # the files of a run's manifest: recovered with it, never alone
    for manifest_path in manifests_for(target):
        try:
            manifest = Manifest.read(manifest_path)
        except (OSError, ValueError, TypeError, KeyError) as err:
            say(f"note: {manifest_path} cannot be read ({err}); the partial files are finished one by one")
            continue
        outputs = {p.resolve() for p in (manifest.out_path(), manifest.detections_path()) if p is not None}
        if target.resolve() in outputs:
            return _recover_manifest(manifest, overwrite, say)
        claimed.update(p.resolve() for p in manifest.part_paths() + [manifest.log_path()])
    done = []
    found = [p for p in partials_of(target) if not is_locked(p.path) and p.path.resolve() not in claimed]
    held = [p for p in partials_of(target) if is_locked(p.path)]
    if held and not quiet:
        say(f"note: {held[0].path} is being written by a running streamer: left alone")
    if not found:
        return done
    newest = found[-1]
    for older in found[:-1]:
        say(f"note: an older partial of {target} is left as it is: {older.path} (recover it by its name)")
    _check_free(target, overwrite)
    if newest.path.suffix == ".jsonl":
        lines = trim_torn_tail(newest.path)
        os.replace(newest.path, target)
        done.append(f"recovered {target}: {len(lines.records)} records" + (f" ({lines.torn})" if lines.torn else ""))
    else:
        try:
            frames, _size = finish_partial(newest.path, target)
        except ValueError as err:
            say(f"note: {err}")
            return done
        done.append(f"recovered {target}: {frames} frames from {newest.path.name}")
    return done


def _recover_manifest(manifest: Manifest, overwrite: bool, say: Say) -> List[str]:
    """A file run's outputs from its manifest: the joined video parts, the log's whole lines."""
    from .files import finishing_path

    done = []
    if manifest.out is not None:
        out = manifest.out_path()
        parts = [p for p in manifest.part_paths() if p.exists()]
        frames = 0
        for part in parts:
            try:
                frames += trim(part).frames
            except ValueError:
                part.unlink()  # nothing whole in it (killed before its first fragment)
        parts = [p for p in parts if p.exists()]
        if frames:
            _check_free(out, overwrite)
            frames = join(parts, out, finishing_path(parts[-1]))
            done.append(f"recovered {out}: {frames} frames from {len(parts)} part(s)")
        for part in parts:
            part.unlink(missing_ok=True)
    log = manifest.log_path()
    if manifest.detections is None:
        log.unlink(missing_ok=True)  # the run's own log (for --resume), not an output
    elif log.exists():
        detections = manifest.detections_path()
        _check_free(detections, overwrite)
        lines = trim_torn_tail(log)
        os.replace(log, detections)
        done.append(f"recovered {detections}: {len(lines.records)} records" + (f" ({lines.torn})" if lines.torn else ""))
    shutil.rmtree(manifest.state_dir(), ignore_errors=True)
    manifest.path().unlink(missing_ok=True)
    if not done:
        say(f"note: the run of {manifest.anchor} was killed before it wrote a whole second; nothing to keep")
        done.append(f"removed the empty partial files of {manifest.anchor}")
    return done
