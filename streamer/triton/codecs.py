"""The model contracts' codecs: how a frame becomes a model's input and its answer becomes Detections.

- `SeedCodec`: the seed's `fasterrcnn`, FP32 [3, H, W] in 0..1, outputs of N rows.
- `PaddedCodec`: the batchable `fasterrcnn_u8`, UINT8 [1, H, W, 3], K padded rows and a count.
- `codec_for(config)`: the codec a served model's config calls for.

The answers are validated here, once, where they are decoded: a row whose box or score is not a
finite number (NaN, inf: a broken export, an fp16 overflow) is dropped and counted in the
`OutputCheck` the caller passes (the first is logged, once), so nothing after this point (the
tracker, the drawing, the logs, the page's JSON) ever sees one. `streamer doctor` says such a
model is broken.
"""

from __future__ import annotations

import threading
from typing import Callable, List, Optional

import numpy as np

from .. import contract
from ..frames import Detections


def to_input(image: np.ndarray) -> np.ndarray:
    """RGB uint8 H x W x 3 -> the seed contract's FP32 [3, H, W] in 0..1."""
    chw = image.transpose(2, 0, 1).astype(np.float32)
    chw *= np.float32(1.0 / 255.0)
    return chw


class OutputCheck:
    """What the decoders dropped: rows whose box or score is not a finite number. Shared by the
    clients of a run (thread-safe: answers are decoded on the stream's threads); the first
    dropped row is logged through `log`, once."""

    def __init__(self, log: Optional[Callable[[str], None]] = None):
        self.log = log
        self.rows = 0  # rows dropped
        self.answers = 0  # answers that had any
        self._lock = threading.Lock()

    def dropped(self, rows: int) -> None:
        with self._lock:
            first = self.rows == 0
            self.rows += rows
            self.answers += 1
        if first and self.log is not None:
            self.log(f"WARNING: the model answered {rows} box(es) whose coordinates or score are not numbers "
                     f"(NaN or infinite); such boxes are dropped and counted. A model that returns them is "
                     f"broken (re-export it; `streamer doctor` checks it)")

    def summary(self) -> Optional[str]:
        """The run's note about it (None: nothing was dropped)."""
        if not self.rows:
            return None
        return (f"WARNING: {self.rows} box(es) in {self.answers} answer(s) had coordinates or scores that are "
                f"not numbers (NaN or infinite) and were dropped: the model is broken (`streamer doctor`)")


def finite(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
           check: Optional[OutputCheck] = None) -> Detections:
    """Detections of the rows whose box and score are finite; the others dropped, counted in `check`."""
    boxes = boxes.reshape(-1, 4)
    if len(labels) != len(boxes) or len(scores) != len(boxes):
        return Detections(boxes, labels, scores)  # the lengths are Detections' own check
    good = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    if good.all():
        return Detections(boxes, labels, scores)
    if check is not None:
        check.dropped(int(len(good) - good.sum()))
    return Detections(boxes[good], labels[good], scores[good])


def parse_outputs(result, check: Optional[OutputCheck] = None) -> Detections:
    """Detections from a seed-model InferResult; ValueError when the shapes break the contract.
    Rows that are not finite are dropped (`finite`)."""
    boxes = result.as_numpy(contract.OUTPUTS[0].name)
    labels = result.as_numpy(contract.OUTPUTS[1].name)
    scores = result.as_numpy(contract.OUTPUTS[2].name)
    if boxes is None or labels is None or scores is None:
        raise ValueError("response lacks one of output__0/1/2")
    if boxes.ndim != 2 or (boxes.size and boxes.shape[1] != 4):
        raise ValueError(f"output__0 has shape {boxes.shape}, expected [N, 4]")
    return finite(boxes, labels, scores, check)


# -- model codecs: how frames become a model's input and its answer becomes Detections ----------


class SeedCodec:
    """The seed's `fasterrcnn`: FP32 [3, H, W] in 0..1; outputs of N rows."""

    input_name = contract.INPUT.name
    datatype = contract.INPUT.datatype
    output_names = tuple(spec.name for spec in contract.OUTPUTS)
    describe = "FP32 [3,H,W] frames, one per request"

    encode = staticmethod(to_input)
    decode = staticmethod(parse_outputs)

    @staticmethod
    def problems(config) -> List[str]:
        return contract.check_io(config, contract.SEED)


class PaddedCodec:
    """The batchable `fasterrcnn_u8`: UINT8 [1, H, W, 3] as decoded; K padded rows and a count."""

    input_name = contract.U8_INPUT.name
    datatype = contract.U8_INPUT.datatype
    output_names = tuple(spec.name for spec in contract.U8_OUTPUTS)
    describe = "UINT8 [H,W,3] frames, batched by Triton"

    @staticmethod
    def encode(image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image, dtype=np.uint8)[None]

    @staticmethod
    def decode(result, check: Optional[OutputCheck] = None) -> Detections:
        boxes, labels, scores, count = (result.as_numpy(name) for name in PaddedCodec.output_names)
        if boxes is None or labels is None or scores is None or count is None:
            raise ValueError(f"response lacks one of {', '.join(PaddedCodec.output_names)}")
        if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4:
            raise ValueError(f"boxes__0 has shape {list(boxes.shape)}, expected [1, K, 4]")
        k = boxes.shape[1]
        if labels.shape != (1, k) or scores.shape != (1, k) or count.size != 1:
            raise ValueError(f"labels/scores/count have shapes {list(labels.shape)}/{list(scores.shape)}/"
                             f"{list(count.shape)}, expected [1, {k}]/[1, {k}]/[1, 1]")
        n = int(count.reshape(-1)[0])
        if not 0 <= n <= k:
            raise ValueError(f"count__3 is {n}, outside 0..{k}")
        return finite(boxes[0, :n].copy(), labels[0, :n].copy(), scores[0, :n].copy(), check)

    @staticmethod
    def problems(config) -> List[str]:
        return contract.check_io(config, contract.U8)


def codec_for(config):
    """The codec for a served model, from its config: a UINT8 input is the padded model."""
    if any(t.name == contract.U8_INPUT.name or contract.mc.DataType.Name(t.data_type) == "TYPE_UINT8"
           for t in config.input):
        return PaddedCodec
    return SeedCodec
