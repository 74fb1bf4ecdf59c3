"""One camera's view as JSON for the page and `GET /api/state`: names and figures, never URLs.

Every text that comes from the run (the name, the banner that says why a camera is offline, the
HUD lines, output paths, class names) goes through `sources.mask_url`, so a password in a source
URL that found its way into an error text is masked here too.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

from ..sources import mask_url
from ..stages import View
from ..states import ViewState

MAX_DETECTIONS = 100  # per camera in one message (the page lists them; a crowd is cut here)


def _number(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return round(value, 3) if math.isfinite(value) else None


def _class_name(name_of: Optional[Callable[[int], str]], label: int) -> str:
    if name_of is None:
        return str(label)
    try:
        return mask_url(str(name_of(label)))
    except Exception:  # an id the names do not know: its number
        return str(label)


def detections_json(view: View, name_of: Optional[Callable[[int], str]]) -> List[Dict]:
    found = view.detections
    if found is None:
        return []
    items = []
    ids = found.track_ids
    for i in range(min(len(found), MAX_DETECTIONS)):
        label = int(found.labels[i])
        item = {
            "label": label,
            "name": _class_name(name_of, label),
            "score": _number(found.scores[i]),
            "box": [round(float(v), 1) for v in found.boxes[i]],
        }
        if ids is not None and int(ids[i]) >= 0:
            item["track_id"] = int(ids[i])
        items.append(item)
    return items


def recording_json(view: View) -> Optional[Dict]:
    """The camera's recording: state ("recording", "retrying", "stopped"), why, files, frames not
    recorded, the file being written (None: the camera records nothing)."""
    if view.recording is None:
        return None
    found = view.recording.to_json()
    for key in ("reason", "current"):
        if found[key] is not None:
            found[key] = mask_url(found[key])
    return found


def camera_state(view: View, name_of: Optional[Callable[[int], str]] = None) -> Dict:
    """The JSON object of one camera (see the page's app.js and README's web section)."""
    figures = {str(k): _number(v) for k, v in dict(view.figures).items()}
    size = None
    if view.image is not None:
        size = [int(view.image.shape[1]), int(view.image.shape[0])]
    return {
        "name": mask_url(view.name),
        "state": str(view.state),
        "up": view.state is ViewState.UP,
        "reason": None if view.banner is None else mask_url(view.banner),
        "hud": [mask_url(line) for line in view.hud],
        "figures": figures,
        "display_fps": figures.get("display_fps"),
        "source_fps": figures.get("source_fps"),
        "detections_per_s": figures.get("detections_per_s"),
        "detection_age_s": figures.get("detection_age_s"),
        "frame_age_s": figures.get("frame_age_s"),
        "motion": None if figures.get("motion") is None else bool(figures["motion"]),
        "frame": None if view.frame is None else int(view.frame.index),
        "size": size,
        "tracking": view.detections is not None and view.detections.track_ids is not None,
        "detections_count": 0 if view.detections is None else len(view.detections),
        "detections": detections_json(view, name_of),
        "outputs": [mask_url(str(path)) for path in view.outputs],
        "counts": None if view.counts is None else view.counts.to_json(),
        "events": [_event_item(item) for item in view.events],
        "recording": recording_json(view),
    }


def _event_item(item: dict) -> Dict:
    """A recent event as the page lists it (its texts masked like every other text)."""
    out = dict(item)
    out["label"] = mask_url(str(item.get("label", "")))
    return out


def outputs_state(views) -> List[Dict]:
    """The run's event outputs (each view carries the same list): name, state, sent, dropped,
    failed, reason; names and reasons masked."""
    seen: Dict[str, Dict] = {}
    for view in views:
        for status in view.event_outputs:
            item = status.to_json()
            item["name"] = mask_url(str(item["name"]))
            item["reason"] = None if item["reason"] is None else mask_url(str(item["reason"]))
            seen.setdefault(item["name"], item)
    return list(seen.values())
