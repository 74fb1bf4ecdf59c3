"""torchvision Faster R-CNN -> scripted TorchScript wrapper -> Triton model repository.

The only module that imports torch and torchvision (the Python-backend model
file loads the result). Import it lazily: the client must not need torch.
"""

from __future__ import annotations

import copy
import os
import socket
import sys
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import contract, facts
from .errors import ExportError

try:
    import torch
    import torchvision  # noqa: F401  (registers torchvision::nms, roi_align for TorchScript)
    from torchvision.models import detection
    from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks
except ImportError as err:  # pragma: no cover - depends on the install
    raise ExportError(
        f"exporting needs torch and torchvision ({err}); install the server extra: pip install -e '.[server]'"
    ) from err

# arch -> name of its torchvision weights enum
_WEIGHT_ENUMS = {
    "fasterrcnn_resnet50_fpn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights",
    "fasterrcnn_mobilenet_v3_large_fpn": "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
}
assert set(_WEIGHT_ENUMS) == set(contract.ARCHS)

COCO_NUM_CLASSES = 91
# torch.jit.freeze's optimize_numerics (see freeze()).
FREEZE_OPTIMIZE_NUMERICS = False


@dataclass(frozen=True)
class ExportSettings:
    arch: str = contract.DEFAULT_ARCH
    weights: str = "coco"  # "coco", "random" or a path to a .pth state dict
    min_size: Optional[int] = None  # None: the arch's own default
    max_size: Optional[int] = None
    proposals: Optional[int] = None  # RPN proposals kept per image at test time
    box_score_thresh: float = 0.05  # server-side floor; the client applies --threshold on top
    seed: int = 0  # for --weights random: the same export every time


class ResizeFirstTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform with its two steps swapped: resize, then normalize.

    torchvision normalizes the full frame, then shrinks it to the model's size. With the u8
    model's old float conversion of the whole frame, a 1080p frame spent 31 ms of its 81 ms
    (mobilenet_320, 2 cores) in full-size float passes; 2 ms now. Bilinear resizing is linear
    per channel and normalizing is a per-channel affine map, so the order does not change the
    result beyond float rounding (1e-6 of a pixel value here). The scale the image is resized
    by is torchvision's own (`_resize_image_and_masks`), so boxes map back to the frame exactly
    as before.

    `input_scale` is what a pixel value of 1.0 is in the input: 1 for the seed's 0..1 FP32
    images, 255 for uint8 frames (the mean and std are scaled instead of every pixel).
    Inference only: a training target is refused.
    """

    def __init__(self, base: GeneralizedRCNNTransform, input_scale: float = 1.0):
        super().__init__(
            base.min_size, base.max_size,
            [m * input_scale for m in base.image_mean], [s * input_scale for s in base.image_std],
            size_divisible=base.size_divisible, fixed_size=base.fixed_size,
        )

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if not image.is_floating_point():
            raise TypeError(f"expected a floating point image, got {image.dtype}")
        return image  # after the resize, in resize()

    def resize(
        self, image: torch.Tensor, target: Optional[Dict[str, torch.Tensor]] = None
    ) -> Tuple[torch.Tensor, Optional[Dict[str, torch.Tensor]]]:
        if target is not None:
            raise ValueError("ResizeFirstTransform is for inference: no training targets")
        image, _ = _resize_image_and_masks(image, self.min_size[-1], self.max_size, None, self.fixed_size)
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None], None


def with_resize_first(model: torch.nn.Module, input_scale: float = 1.0) -> torch.nn.Module:
    """A copy of the detector whose transform resizes before normalizing (`model` is left as it is)."""
    model = copy.deepcopy(model)
    model.transform = ResizeFirstTransform(model.transform, input_scale)
    return model


class DetectorWrapper(torch.nn.Module):
    """One FP32 [3, H, W] RGB 0..1 image in; boxes [N, 4], labels [N], scores [N] out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.dim() != 3 or image.size(0) != 3 or image.size(1) == 0 or image.size(2) == 0:
            # Triton checks rank and channels; an empty [3, 0, 0] image still gets here.
            return (
                torch.zeros((0, 4), dtype=torch.float32),
                torch.zeros((0,), dtype=torch.int64),
                torch.zeros((0,), dtype=torch.float32),
            )
        if torch.jit.is_scripting():
            # A scripted torchvision detector returns (losses, detections).
            _, detections = self.model([image])
        else:
            detections = self.model([image])
        d = detections[0]
        return d["boxes"], d["labels"], d["scores"]


class BatchDetectorWrapper(torch.nn.Module):
    """uint8 [B, H, W, 3] RGB frames in; per frame K rows of boxes, labels, scores (zero padded),
    and the count of valid rows out: fixed shapes, so Triton can batch requests.

    The channel move happens here and the scaling to 0..1 in the model's transform, after it
    has shrunk the frame (ResizeFirstTransform), so a frame gets the seed model's detections
    while only model-sized images are normalized. torchvision's detector takes a list of
    images; frames of one batch share a size, so they run as one batch inside it.
    """

    def __init__(self, model: torch.nn.Module, max_detections: int):
        super().__init__()
        self.model = model
        self.k = max_detections

    def forward(
        self, images: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b = images.size(0)
        boxes = torch.zeros((b, self.k, 4), dtype=torch.float32)
        labels = torch.zeros((b, self.k), dtype=torch.int64)
        scores = torch.zeros((b, self.k), dtype=torch.float32)
        count = torch.zeros((b, 1), dtype=torch.int32)
        if images.dim() != 4 or images.size(3) != 3 or images.size(1) == 0 or images.size(2) == 0 or b == 0:
            # Triton checks rank and channels; an empty [B, 0, 0, 3] batch still gets here.
            return boxes, labels, scores, count
        # 0..255 floats in the frames' own channels-last layout: the model's transform resizes
        # them first and scales by 1/255 in its normalization (ResizeFirstTransform, 255).
        frames = [f.permute(2, 0, 1).to(torch.float32) for f in torch.unbind(images)]
        if torch.jit.is_scripting():
            _, detections = self.model(frames)
        else:
            detections = self.model(frames)
        for i, d in enumerate(detections):
            n = min(int(d["scores"].size(0)), self.k)
            boxes[i, :n] = d["boxes"][:n]
            labels[i, :n] = d["labels"][:n]
            scores[i, :n] = d["scores"][:n]
            count[i, 0] = n
        return boxes, labels, scores, count


def _weights_enum(arch: str):
    return getattr(detection, _WEIGHT_ENUMS[arch]).COCO_V1


def coco_cache_path(arch: str) -> Path:
    """Where torchvision's download cache keeps (or would keep) the COCO weights."""
    url = _weights_enum(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def class_names(arch: str) -> List[str]:
    """torchvision's COCO category names: 91 ids, index 0 '__background__', 'N/A' gaps."""
    return list(_weights_enum(arch).meta["categories"])


def _model_kwargs(settings: ExportSettings) -> dict:
    kwargs = {"box_score_thresh": settings.box_score_thresh}
    if settings.min_size is not None:
        kwargs["min_size"] = settings.min_size
    if settings.max_size is not None:
        kwargs["max_size"] = settings.max_size
    if settings.proposals is not None:
        kwargs["rpn_post_nms_top_n_test"] = settings.proposals
    return kwargs


def _unwrap_state_dict(obj, path: Path) -> dict:
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    if not isinstance(obj, dict):
        raise ExportError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    return obj


def build_model(settings: ExportSettings) -> Tuple[torch.nn.Module, str, bool]:
    """The eval-mode torchvision model, a description of its weights, and whether it is untrained."""
    builder = getattr(detection, settings.arch)
    kwargs = _model_kwargs(settings)
    if settings.weights == "coco":
        weights = _weights_enum(settings.arch)
        cached = coco_cache_path(settings.arch)
        if not cached.exists():
            print(f"downloading COCO weights for {settings.arch} to {cached} ...", file=sys.stderr)
        try:
            model = builder(weights=weights, weights_backbone=None, **kwargs)
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise ExportError(
                f"cannot get torchvision's COCO weights for {settings.arch} ({reason}; nothing cached at "
                f"{cached}). Use --weights PATH with a local .pth state dict (e.g. that file fetched "
                f"elsewhere from {weights.url}), or --weights random for an untrained model (tests, plumbing)"
            ) from err
        except RuntimeError as err:
            raise ExportError(
                f"the cached COCO weights {cached} do not load ({str(err).splitlines()[0]}); "
                "delete the file and retry, or use --weights PATH / --weights random"
            ) from err
        return model.eval(), f"coco ({weights.url.rsplit('/', 1)[-1]})", False

    torch.manual_seed(settings.seed)
    model = builder(weights=None, weights_backbone=None, num_classes=COCO_NUM_CLASSES, **kwargs)
    if settings.weights == "random":
        return model.eval(), "random", True

    path = Path(settings.weights)
    if not path.is_file():
        raise ExportError(f"weights file {path} does not exist; pass coco, random or a path to a .pth state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a bad file
        raise ExportError(f"cannot read {path} as a PyTorch state dict ({str(err).splitlines()[0]})") from err
    state = _unwrap_state_dict(state, path)
    cls = state.get("roi_heads.box_predictor.cls_score.weight")
    if cls is not None and cls.shape[0] != COCO_NUM_CLASSES:
        raise ExportError(
            f"{path} predicts {cls.shape[0]} classes; this model contract serves COCO's "
            f"{COCO_NUM_CLASSES}-id label space"
        )
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # same keys, other shapes
        first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise ExportError(f"{path} is not a state dict for {settings.arch} ({first[:200]}); check --arch") from err
    if result.missing_keys or result.unexpected_keys:
        sample = (result.missing_keys + result.unexpected_keys)[:3]
        raise ExportError(
            f"{path} is not a state dict for {settings.arch} ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys, e.g. {', '.join(sample)}); check --arch"
        )
    return model.eval(), f"file ({path.name})", False


def _wrap(model: torch.nn.Module, served: contract.ModelContract, max_detections: int) -> torch.nn.Module:
    if served.name == contract.U8_MODEL_NAME:
        return BatchDetectorWrapper(with_resize_first(model, 255.0), max_detections).eval()
    return DetectorWrapper(with_resize_first(model)).eval()


def script(model: torch.nn.Module, served: contract.ModelContract = contract.SEED,
           max_detections: int = contract.DEFAULT_MAX_DETECTIONS) -> torch.jit.ScriptModule:
    """The plain scripted wrapper of `model` for the `served` model's contract."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "RCNN always returns a (Losses, Detections) tuple in scripting"
        return torch.jit.script(_wrap(model, served, max_detections))


def freeze(scripted: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The exported form: weights inlined as constants, conv+BN folded (torch.jit.freeze).

    optimize_numerics=False: only folds that keep the arithmetic (no conv+add/mul folding
    that rounds differently). Plain TorchScript: it saves, and torch.jit.load (the C++ loader
    Triton's LibTorch backend uses) reads it in a fresh process; optimize_for_inference
    output would not serialize.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.freeze(scripted.eval(), optimize_numerics=FREEZE_OPTIMIZE_NUMERICS)


def sample_input(served: contract.ModelContract, batch: int = 1) -> torch.Tensor:
    """A small deterministic image in `served`'s input layout (a batch for batched models)."""
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))
    if served.max_batch_size == 0:
        return image
    hwc = (image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return hwc.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


_DTYPES = {"FP32": torch.float32, "INT64": torch.int64, "INT32": torch.int32}


def self_check(module: torch.jit.ScriptModule, served: contract.ModelContract = contract.SEED,
               max_detections: int = contract.DEFAULT_MAX_DETECTIONS) -> None:
    """Run the module once (two frames for a batched model) and check its outputs against the contract."""
    batch = 2 if served.max_batch_size > 0 else 0
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs = module(sample_input(served, max(batch, 1)))
    specs = served.resolved_outputs(max_detections)
    problems = []
    rows = {int(t.shape[0]) for t in outputs if t.dim() > 0}  # N detections, or the batch
    for tensor, spec in zip(outputs, specs):
        dims = ((batch,) if batch else ()) + tuple(spec.dims)
        shape_ok = len(tensor.shape) == len(dims) and all(d == -1 or d == n for d, n in zip(dims, tensor.shape))
        if tensor.dtype != _DTYPES[spec.datatype] or not shape_ok:
            problems.append(
                f"{spec.name} is {tensor.dtype} {list(tensor.shape)}, expected {spec.datatype} {list(dims)}")
    if len(outputs) != len(specs) or len(rows) != 1:
        problems.append(f"{len(outputs)} outputs with first dims {sorted(rows)}")
    if problems:  # pragma: no cover - would be a bug in a wrapper
        raise ExportError(f"exported {served.name} breaks its contract: {'; '.join(problems)}")


def save_model(module: torch.jit.ScriptModule, target: Path, model_facts: dict) -> None:
    """model.pt with the export's facts inside (`facts`: what a server tells remote clients)."""
    tmp = target.with_suffix(".pt.tmp")
    module.save(str(tmp), _extra_files={facts.EXTRA_FILE: facts.encode(model_facts)})
    os.replace(tmp, target)


def export(settings: ExportSettings, repo: Path) -> Path:
    """Write both models into `repo`: fasterrcnn (the seed's contract) and fasterrcnn_u8 (uint8
    frames, padded outputs, batched by Triton), each as <name>/1/model.pt, <name>/config.pbtxt
    and <name>/configs/gpu.pbtxt, from the same weights and settings. Returns the repository."""
    repo = Path(repo)
    for served in contract.CONTRACTS:
        version_dir = repo / served.name / "1"
        try:
            version_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ExportError(f"cannot create {version_dir} ({err.strerror}); pick a writable --repo") from err
    model, weights_desc, untrained = build_model(settings)
    # Every arch is exported in channels-last memory format, then frozen. On a quiet 2-core machine
    # (scripts/model_speed.py, 2026-11-25) that ran x1.13-1.16 the seed's plain scripted module
    # for all three archs, freezing alone x1.00-1.06. Outputs differ from the plain module's by
    # float rounding only (v2: boxes 0.01 px, scores 2e-5; mobilenet_320: bit-equal).
    model = model.to(memory_format=torch.channels_last)
    transform = model.transform
    max_detections = int(model.roi_heads.detections_per_img)
    model_facts = dict(
        arch=settings.arch,
        weights=weights_desc,
        untrained=untrained,
        class_names=class_names(settings.arch),
        min_size=int(transform.min_size[0]),
        max_size=int(transform.max_size),
        proposals=int(model.rpn._post_nms_top_n["testing"]),
        box_score_thresh=float(model.roi_heads.score_thresh),
    )
    for served in contract.CONTRACTS:
        module = freeze(script(model, served, max_detections))
        self_check(module, served, max_detections)
        model_dir = repo / served.name
        save_model(module, model_dir / "1" / contract.MODEL_FILENAME, model_facts)
        # The contract alone: the same text for every export with this K, so exporting into the
        # committed model_repository/ leaves it unchanged (the facts are in model.pt).
        _write_if_changed(model_dir / contract.CONFIG_FILENAME,
                          contract.render_config(max_detections=max_detections, model=served))
        # The same model on a GPU: `tritonserver --model-config-name=gpu` (see docker-compose.gpu.yml).
        configs = model_dir / contract.CONFIGS_DIR
        configs.mkdir(exist_ok=True)
        _write_if_changed(configs / f"{contract.GPU_CONFIG_NAME}.pbtxt",
                          contract.render_config(max_detections=max_detections, kind="KIND_GPU", model=served))
    return repo


def _write_if_changed(path: Path, text: str) -> None:
    """Leave a file that already holds `text` untouched (its mtime too)."""
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def load_scripted(path: Path) -> torch.jit.ScriptModule:
    """Load an exported model.pt (torchvision imported first: it registers the ops)."""
    return torch.jit.load(str(path), map_location="cpu")


def summary(repo: Path) -> str:
    model_dir = repo / contract.MODEL_NAME
    found = facts.read(model_dir / "1" / contract.MODEL_FILENAME) or {}
    k = contract.max_detections_of(contract.read_config(model_dir / contract.CONFIG_FILENAME))
    models = ", ".join(served.name for served in contract.CONTRACTS)
    return (
        f"exported {found.get('arch')} ({found.get('weights')} weights, "
        f"min_size {found.get('min_size')}, max_size {found.get('max_size')}, "
        f"{found.get('proposals')} proposals, {k} detections "
        f"per image, {len(found.get('class_names', ()))} class ids) as {models} to {repo}"
    )
