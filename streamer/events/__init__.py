"""Events: what tracked objects do (appear, enter zones, cross lines, loiter, leave), and where
that goes (a JSONL file, MQTT, webhooks, snapshots, clips).

    Stage* = class filter ▶ tracker ▶ threshold ▶ events ──Event──▶ event outputs (own threads)

`types` holds the values that travel (Event, ObjectState, Crossing, Counts) and the
`EventOutput` interface every output implements.
"""

from .types import (
    Counts,
    Crossing,
    Direction,
    Event,
    EventKind,
    EventOutput,
    ObjectState,
    OutputState,
    OutputStatus,
    UpdateReason,
)

__all__ = ["Counts", "Crossing", "Direction", "Event", "EventKind", "EventOutput", "ObjectState",
           "OutputState", "OutputStatus", "UpdateReason"]
