"""JSON lines that survive a kill: written whole, handed to the OS at once, read back torn-tolerant.

`JsonLines` writes one JSON object per line into a partial file (`files.partial_path`) and hands
each line to the OS in one write as soon as it is written: a SIGKILL loses at most the record being
written, never one already written, and the OS has every byte long before "once a second". On a
clean close the file is synced and moved to its target name. The detections log (`--detections`)
and the segment index use it; any other JSON-lines output (an events log) can too:

    with JsonLines(Path("events.jsonl")) as out:
        out.write({"type": "enter", ...})

`read_json_lines` reads such a file back. A last line that is not whole (no newline at its end: the
writer was killed inside it, or the disk filled) is left out and said in `LinesRead.torn`; a line
that ends but is not a JSON object is an error (`LinesRead.bad_line`), since no kill does that.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .files import DurableFile, OutputFailed, new_run_id, partial_path, reason_of


class JsonLines:
    """One JSON object per line, each in one write (see the module docstring).

    target: the finished file's name; partial: where it is written meanwhile (default: beside the
    target, `.NAME.partial-RUNID.EXT`; the target itself for a file only ever appended to, an
    index); append: go on with an existing partial (a resumed run)."""

    def __init__(self, target: Path, partial: Optional[Path] = None, append: bool = False,
                 run_id: Optional[str] = None):
        self.target = Path(target)
        self.partial = Path(partial) if partial is not None else partial_path(self.target, run_id or new_run_id())
        self.append = append
        self.written = 0
        self._file: Optional[DurableFile] = None

    def __enter__(self) -> "JsonLines":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        self._file = DurableFile(self.partial, self.target, append=self.append)

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def write(self, record: dict) -> None:
        """Write one record (OutputFailed naming the target when it cannot be written)."""
        self._file.write((json.dumps(record) + "\n").encode("utf-8"))
        self._file.commit()
        self.written += 1

    def close(self, finish: bool = True) -> None:
        """Sync and move the file to its target name (finish), or leave the partial as it is."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            if finish:
                file.sync()
        finally:
            file.close()
        if finish:
            try:
                os.replace(self.partial, self.target)
            except OSError as err:
                raise OutputFailed(self.target, reason_of(err), self.partial) from err

    def abandon(self) -> None:
        """Close and keep the partial where it is (for `--resume` or `streamer recover`)."""
        self.close(finish=False)


@dataclass
class LinesRead:
    """What `read_json_lines` found: the records (whole lines that are JSON objects), the note on a
    torn last line (None: none), the first bad line elsewhere (None: none), and how many bytes
    the whole lines take (where a writer may go on appending)."""

    records: List[dict] = field(default_factory=list)
    torn: Optional[str] = None
    bad_line: Optional[int] = None
    bad_reason: Optional[str] = None
    whole_bytes: int = 0


def read_json_lines(path: Path) -> LinesRead:
    """Read a JSON-lines file written by `JsonLines` (OSError when it cannot be read)."""
    path = Path(path)
    data = path.read_bytes()
    found = LinesRead()
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" when the file ends whole
    offset = 0
    for n, raw in enumerate(lines, 1):
        end = offset + len(raw) + 1
        if raw.strip():
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                found.bad_line = n
                found.bad_reason = getattr(err, "msg", str(err))
                return found
            if not isinstance(record, dict):
                found.bad_line, found.bad_reason = n, "not a JSON object"
                return found
            found.records.append(record)
        offset = end
        found.whole_bytes = offset
    if tail.strip():
        found.torn = f"{path.name}: its last line (line {len(lines) + 1}) is cut short and was left out"
    return found


def trim_torn_tail(path: Path, keep: Optional[int] = None) -> LinesRead:
    """Cut a JSON-lines file back to its whole lines (and to its first `keep` records, when given)
    so that a writer can go on appending. What was read (before cutting)."""
    found = read_json_lines(path)
    end = found.whole_bytes
    if keep is not None and keep < len(found.records):
        end = _offset_after(path, keep)
    if end < path.stat().st_size:
        os.truncate(path, end)
    return found


def _offset_after(path: Path, records: int) -> int:
    """The byte offset just after the first `records` non-empty lines."""
    offset = seen = 0
    with open(path, "rb") as f:
        for raw in f:
            if seen == records:
                break
            offset += len(raw)
            if raw.strip():
                seen += 1
    return offset
