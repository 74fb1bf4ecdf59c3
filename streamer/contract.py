"""The model contracts shared by the exporter, the servers and the client.

One place defines the two models one export writes (SEED: the seed's `fasterrcnn`, one
FP32 image per request; U8: `fasterrcnn_u8`, uint8 frames batched by Triton, outputs
padded to K rows plus a count), their tensors, and the metadata a client reads from a
served model's config `parameters` (the export's facts: written into model.pt and merged
into the loaded config by the server, see `facts`). config.pbtxt is parsed with Triton's
own protobuf schema (shipped in tritonclient), so what we write is what Triton reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .facts import parameter_line

MODEL_NAME = "fasterrcnn"  # the seed's model: one FP32 image per request, ragged outputs
U8_MODEL_NAME = "fasterrcnn_u8"  # uint8 frames in, outputs padded to K rows: Triton batches it
MODEL_FILENAME = "model.pt"
CONFIG_FILENAME = "config.pbtxt"
# Triton's custom model configurations: <model>/configs/<name>.pbtxt, chosen at start
# with `tritonserver --model-config-name=<name>` (config.pbtxt otherwise).
CONFIGS_DIR = "configs"
GPU_CONFIG_NAME = "gpu"
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")

ARCHS = (
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)
DEFAULT_ARCH = ARCHS[0]


# A dimension fixed at export: K, the detections per image (torchvision's box_detections_per_img).
K = "K"
DEFAULT_MAX_DETECTIONS = 100


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Triton wire datatype: "FP32", "INT64", "UINT8", "INT32"
    dims: Tuple[Union[int, str], ...]  # per request, without the batch dimension; K: see above
    role: str

    @property
    def config_type(self) -> str:
        return "TYPE_" + self.datatype

    def resolved(self, k: int) -> "TensorSpec":
        """The same tensor with K replaced by the model's detections per image."""
        return replace(self, dims=tuple(k if d == K else d for d in self.dims))


@dataclass(frozen=True)
class ModelContract:
    """One served model: its name, tensors and whether Triton may batch its requests."""

    name: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    max_batch_size: int  # 0: no batch dimension, one image per request
    batching: str  # why, as a comment in config.pbtxt

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    def resolved_outputs(self, k: int) -> Tuple[TensorSpec, ...]:
        return tuple(t.resolved(k) for t in self.outputs)


INPUT = TensorSpec("input__0", "FP32", (3, -1, -1), "image: RGB, 0..1, channels first")
OUTPUTS = (
    TensorSpec("output__0", "FP32", (-1, 4), "boxes: x1, y1, x2, y2 in input pixels"),
    TensorSpec("output__1", "INT64", (-1,), "labels: COCO category ids (91-id space)"),
    TensorSpec("output__2", "FP32", (-1,), "scores: 0..1"),
)
SEED = ModelContract(
    MODEL_NAME, (INPUT,), OUTPUTS, max_batch_size=0,
    batching="""# One image per request. The number of detections N differs per image, so
# Triton-side batching cannot apply to this contract: a batch would need one
# shape for all outputs. Concurrency comes from requests in flight instead.
# The model fasterrcnn_u8 beside this one is the batchable variant.""",
)

U8_INPUT = TensorSpec("image__0", "UINT8", (-1, -1, 3),
                      "image: RGB uint8 as decoded, height x width x 3 (the model scales and transposes)")
U8_OUTPUTS = (
    TensorSpec("boxes__0", "FP32", (K, 4), "boxes: x1, y1, x2, y2 in input pixels; rows >= count are zeros"),
    TensorSpec("labels__1", "INT64", (K,), "labels: COCO category ids (91-id space); padding 0"),
    TensorSpec("scores__2", "FP32", (K,), "scores: 0..1, descending; padding 0"),
    TensorSpec("count__3", "INT32", (1,), "count: valid rows of boxes, labels, scores"),
)
U8_MAX_BATCH_SIZE = 8
U8 = ModelContract(
    U8_MODEL_NAME, (U8_INPUT,), U8_OUTPUTS, max_batch_size=U8_MAX_BATCH_SIZE,
    batching="""# Batchable: every output has a fixed shape (padded to K detections plus a
# count, as TensorRT's EfficientNMS), so Triton's dynamic batcher may join
# requests whose frames have the same size (several cameras, or one file's
# in-flight window) into one execution of up to max_batch_size frames.""",
)
# The models one export writes, the batchable one first (the client's preference).
CONTRACTS = (U8, SEED)
# Without --model, a client uses the first of these the server has ready.
PREFERRED_MODELS = tuple(model.name for model in CONTRACTS)

# Keys of a served model's config `parameters` that describe the model to any client (all but
# max_detections come from model.pt's facts: see facts.KEYS).
P_CLASS_NAMES = "class_names"
P_ARCH = "arch"
P_WEIGHTS = "weights"
P_UNTRAINED = "untrained"
P_MIN_SIZE = "min_size"
P_MAX_SIZE = "max_size"
P_PROPOSALS = "proposals"
P_BOX_SCORE_THRESH = "box_score_thresh"
P_MAX_DETECTIONS = "max_detections"  # K: detections per image (the u8 model's padded rows)


def contract_for(name: str) -> ModelContract:
    """The contract of a model name this project exports. Raises KeyError for another name."""
    for model in CONTRACTS:
        if model.name == name:
            return model
    raise KeyError(name)


@dataclass(frozen=True)
class ModelInfo:
    """What a client learns about the served model from its config."""

    arch: str
    weights: str
    untrained: bool
    class_names: Tuple[str, ...]
    min_size: Optional[int] = None
    max_size: Optional[int] = None
    max_detections: Optional[int] = None

    def name_of(self, label: int) -> str:
        if 0 <= label < len(self.class_names):
            return self.class_names[label]
        return f"class {label}"

    def label_ids(self, names: List[str]) -> List[int]:
        """COCO ids for class names (case-insensitive). Raises KeyError naming the unknown ones."""
        index: Dict[str, int] = {}
        for i, n in enumerate(self.class_names):
            if n not in ("N/A", "__background__"):
                index.setdefault(n.lower(), i)
        unknown = [n for n in names if n.strip().lower() not in index]
        if unknown:
            raise KeyError(", ".join(unknown))
        return [index[n.strip().lower()] for n in names]

    def describe(self) -> str:
        size = f", min_size {self.min_size}" if self.min_size else ""
        return f"{self.arch} ({self.weights} weights{size})"


def parse_config(text: str) -> mc.ModelConfig:
    """Parse config.pbtxt text with Triton's schema. Raises ValueError on bad syntax."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as err:
        raise ValueError(f"config.pbtxt does not parse: {err}") from err


def read_config(path: Path) -> mc.ModelConfig:
    return parse_config(Path(path).read_text())


def max_detections_of(config: mc.ModelConfig) -> int:
    """K of a model config (its `max_detections` parameter; torchvision's default when absent)."""
    value = config.parameters[P_MAX_DETECTIONS].string_value if P_MAX_DETECTIONS in config.parameters else ""
    try:
        return int(value) if value else DEFAULT_MAX_DETECTIONS
    except ValueError:
        return -1  # reported by check_io as a dims mismatch


def check_io(config: mc.ModelConfig, model: ModelContract = SEED) -> List[str]:
    """Differences between a model config's inputs/outputs and `model`'s contract (empty: it matches)."""
    problems = []

    def compare(kind: str, declared, specs) -> None:
        by_name = {t.name: t for t in declared}
        for spec in specs:
            t = by_name.get(spec.name)
            if t is None:
                problems.append(f"{kind} {spec.name} is missing")
                continue
            dtype = mc.DataType.Name(t.data_type)
            if dtype != spec.config_type:
                problems.append(f"{kind} {spec.name} is {dtype}, expected {spec.config_type}")
            if tuple(t.dims) != spec.dims:
                problems.append(f"{kind} {spec.name} has dims {list(t.dims)}, expected {list(spec.dims)}")
        extra = sorted(set(by_name) - {s.name for s in specs})
        if extra:
            problems.append(f"unexpected {kind}s: {', '.join(extra)}")

    compare("input", config.input, model.inputs)
    compare("output", config.output, model.resolved_outputs(max_detections_of(config)))
    if model.max_batch_size == 0 and config.max_batch_size != 0:
        problems.append(f"max_batch_size is {config.max_batch_size}, expected 0 (one image per request)")
    if model.max_batch_size > 0 and config.max_batch_size < 1:
        problems.append(f"max_batch_size is {config.max_batch_size}, expected at least 1 (batched frames)")
    return problems


def model_info(parameters: Dict[str, str]) -> ModelInfo:
    """ModelInfo from config `parameters` (key -> string value). Raises ValueError when incomplete."""
    missing = [k for k in (P_CLASS_NAMES, P_ARCH, P_WEIGHTS, P_UNTRAINED) if k not in parameters]
    if missing:
        raise ValueError(f"model config lacks parameters {', '.join(missing)}; re-run `streamer export-model`")
    names = json.loads(parameters[P_CLASS_NAMES])

    def opt_int(key: str) -> Optional[int]:
        value = parameters.get(key)
        return int(value) if value not in (None, "") else None

    return ModelInfo(
        arch=parameters[P_ARCH],
        weights=parameters[P_WEIGHTS],
        untrained=parameters[P_UNTRAINED].lower() == "true",
        class_names=tuple(names),
        min_size=opt_int(P_MIN_SIZE),
        max_size=opt_int(P_MAX_SIZE),
        max_detections=opt_int(P_MAX_DETECTIONS),
    )


def config_parameters(config: mc.ModelConfig) -> Dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


# Triton's model_warmup: the first inferences of a TorchScript detector are slow (the
# profiling executor profiles, then optimises: measured in-process here, the first two calls
# took 3-9x the steady time and the third was steady, whatever the frame size, after black or
# noise frames alike), so the server runs WARMUP_COUNT black frames through every model
# instance before it reports the model ready. Zeros, not random_data: Triton fills random_data
# with random bytes, which as FP32 include NaN and inf.
WARMUP_HEIGHT, WARMUP_WIDTH = 480, 640
WARMUP_COUNT = 3
# Dynamic batching without a queue delay: a request that finds the model idle runs at once
# (a delay would add its full length to every frame of a server that keeps up), while the
# requests that arrive during an execution (several cameras, a file's in-flight window) are
# joined into the next one. A model execution takes 50-8000 ms here, so no delay a
# live stream could afford would gather more frames than that queue already does.
MAX_QUEUE_DELAY_US = 0


def warmup_shape(model: ModelContract) -> Tuple[int, ...]:
    """The warm-up frame's dims (per request) for `model`'s input."""
    free = [WARMUP_HEIGHT, WARMUP_WIDTH]  # the variable dims, in order: height, then width
    return tuple(free.pop(0) if d == -1 else d for d in model.input.dims)


def render_config(
    *,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    kind: str = "KIND_CPU",
    model: ModelContract = SEED,
) -> str:
    """`model`'s config.pbtxt for NVIDIA's Triton image (LibTorch backend); `kind` places the instance.

    The contract only: the export's facts (arch, weights, sizes, class names) travel in model.pt
    and are merged in by whatever serves it (`facts`), so this text depends on nothing but the
    contract, K (the u8 model's padded rows) and the instance kind."""
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind {kind!r}: expected one of {', '.join(INSTANCE_KINDS)}")

    def tensor(spec: TensorSpec) -> str:
        dims = ", ".join(str(d) for d in spec.dims)
        return (
            f"  {{\n    # {spec.role}\n    name: \"{spec.name}\"\n"
            f"    data_type: {spec.config_type}\n    dims: [ {dims} ]\n  }}"
        )

    inputs = ",\n".join(tensor(s) for s in model.inputs)
    outputs = ",\n".join(tensor(s) for s in model.resolved_outputs(max_detections))
    batcher = (
        f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}\n"
        if model.max_batch_size > 0 else ""
    )
    warm_dims = ", ".join(str(d) for d in warmup_shape(model))
    variant = (
        f"# The GPU variant of ../{CONFIG_FILENAME}: `tritonserver --model-config-name={GPU_CONFIG_NAME}`.\n"
        if kind == "KIND_GPU" else ""
    )
    text = f"""# Generated by `streamer export-model` (the same for every export of this contract).
{variant}# Served by NVIDIA's Triton image with the LibTorch backend (model.pt is TorchScript).
# The local `streamer serve` derives a Python-backend twin from this file.
name: "{model.name}"
platform: "pytorch_libtorch"
{model.batching}
max_batch_size: {model.max_batch_size}
{batcher}input [
{inputs}
]
output [
{outputs}
]
instance_group [ {{ count: 1, kind: {kind} }} ]
# Black {WARMUP_WIDTH}x{WARMUP_HEIGHT} frames, {WARMUP_COUNT} times, before the model is ready: the first
# real frame then runs at the steady speed (see streamer/contract.py).
model_warmup [
  {{
    name: "black_{WARMUP_WIDTH}x{WARMUP_HEIGHT}"
    batch_size: 1
    count: {WARMUP_COUNT}
    inputs {{
      key: "{model.input.name}"
      value: {{ data_type: {model.input.config_type} dims: [ {warm_dims} ] zero_data: true }}
    }}
  }}
]
# LibTorch backend: detection models see a new input shape on most frames;
# the profiling executor would re-optimise for each, so turn it off.
{parameter_line("DISABLE_OPTIMIZED_EXECUTION", "true")}
{parameter_line("INFERENCE_MODE", "true")}
# K, the detections per image (the u8 model's padded rows). The export's facts (arch, weights,
# sizes, class names) are in 1/model.pt; a server adds them to the config it loads (streamer/facts.py).
{parameter_line(P_MAX_DETECTIONS, str(max_detections))}
"""
    config = parse_config(text)  # never write what Triton could not read
    problems = check_io(config, model)
    assert not problems, problems
    return text
