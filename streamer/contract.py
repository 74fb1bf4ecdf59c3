"""The model contract shared by the exporter, the servers and the client.

One place defines the model's name, tensors and the metadata that travels in
config.pbtxt `parameters`. config.pbtxt is parsed with Triton's own protobuf
schema (shipped in tritonclient), so what we write is what Triton reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

MODEL_NAME = "fasterrcnn"
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


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Triton wire datatype: "FP32", "INT64"
    dims: Tuple[int, ...]
    role: str

    @property
    def config_type(self) -> str:
        return "TYPE_" + self.datatype


INPUT = TensorSpec("input__0", "FP32", (3, -1, -1), "image: RGB, 0..1, channels first")
OUTPUTS = (
    TensorSpec("output__0", "FP32", (-1, 4), "boxes: x1, y1, x2, y2 in input pixels"),
    TensorSpec("output__1", "INT64", (-1,), "labels: COCO category ids (91-id space)"),
    TensorSpec("output__2", "FP32", (-1,), "scores: 0..1"),
)

# Keys of config.pbtxt `parameters` that describe the model to any client.
P_CLASS_NAMES = "class_names"
P_ARCH = "arch"
P_WEIGHTS = "weights"
P_UNTRAINED = "untrained"
P_MIN_SIZE = "min_size"
P_MAX_SIZE = "max_size"
P_PROPOSALS = "proposals"
P_BOX_SCORE_THRESH = "box_score_thresh"


@dataclass(frozen=True)
class ModelInfo:
    """What a client learns about the served model from its config."""

    arch: str
    weights: str
    untrained: bool
    class_names: Tuple[str, ...]
    min_size: Optional[int] = None
    max_size: Optional[int] = None

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


def check_io(config: mc.ModelConfig) -> List[str]:
    """Differences between a model config's inputs/outputs and the contract (empty: it matches)."""
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

    compare("input", config.input, (INPUT,))
    compare("output", config.output, OUTPUTS)
    if config.max_batch_size != 0:
        problems.append(f"max_batch_size is {config.max_batch_size}, expected 0 (one image per request)")
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
    )


def config_parameters(config: mc.ModelConfig) -> Dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def render_config(
    *,
    arch: str,
    weights: str,
    untrained: bool,
    class_names: List[str],
    min_size: int,
    max_size: int,
    proposals: int,
    box_score_thresh: float,
    kind: str = "KIND_CPU",
) -> str:
    """config.pbtxt for NVIDIA's Triton image (LibTorch backend); `kind` places the model instance."""
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind {kind!r}: expected one of {', '.join(INSTANCE_KINDS)}")

    def tensor(spec: TensorSpec) -> str:
        dims = ", ".join(str(d) for d in spec.dims)
        return (
            f"  {{\n    # {spec.role}\n    name: \"{spec.name}\"\n"
            f"    data_type: {spec.config_type}\n    dims: [ {dims} ]\n  }}"
        )

    def param(key: str, value: str) -> str:
        return f"parameters: {{ key: \"{key}\" value: {{ string_value: {json.dumps(value)} }} }}"

    outputs = ",\n".join(tensor(s) for s in OUTPUTS)
    variant = (
        f"# The GPU variant of ../{CONFIG_FILENAME}: `tritonserver --model-config-name={GPU_CONFIG_NAME}`.\n"
        if kind == "KIND_GPU" else ""
    )
    text = f"""# Generated by `streamer export-model`; edit the export options, not this file.
{variant}# Served by NVIDIA's Triton image with the LibTorch backend (model.pt is TorchScript).
# The local `streamer serve` derives a Python-backend twin from this file.
name: "{MODEL_NAME}"
platform: "pytorch_libtorch"
# One image per request. The number of detections N differs per image, so
# Triton-side batching cannot apply to this contract: a batch would need one
# shape for all outputs. Concurrency comes from requests in flight instead.
max_batch_size: 0
input [
{tensor(INPUT)}
]
output [
{outputs}
]
instance_group [ {{ count: 1, kind: {kind} }} ]
# LibTorch backend: detection models see a new input shape on most frames;
# the profiling executor would re-optimise for each, so turn it off.
{param("DISABLE_OPTIMIZED_EXECUTION", "true")}
{param("INFERENCE_MODE", "true")}
# What a remote client needs to know about this model.
{param(P_ARCH, arch)}
{param(P_WEIGHTS, weights)}
{param(P_UNTRAINED, "true" if untrained else "false")}
{param(P_MIN_SIZE, str(min_size))}
{param(P_MAX_SIZE, str(max_size))}
{param(P_PROPOSALS, str(proposals))}
{param(P_BOX_SCORE_THRESH, repr(float(box_score_thresh)))}
{param(P_CLASS_NAMES, json.dumps(class_names))}
"""
    config = parse_config(text)  # never write what Triton could not read
    problems = check_io(config)
    assert not problems, problems
    return text
