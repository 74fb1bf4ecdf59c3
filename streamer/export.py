"""torchvision Faster R-CNN -> scripted TorchScript wrapper -> Triton model repository.

The only module that imports torch and torchvision (the Python-backend model
file loads the result). Import it lazily: the client must not need torch.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from . import contract
from .errors import ExportError

try:
    import torch
    import torchvision  # noqa: F401  (registers torchvision::nms, roi_align for TorchScript)
    from torchvision.models import detection
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


@dataclass(frozen=True)
class ExportSettings:
    arch: str = contract.DEFAULT_ARCH
    weights: str = "coco"  # "coco", "random" or a path to a .pth state dict
    min_size: Optional[int] = None  # None: the arch's own default
    max_size: Optional[int] = None
    proposals: Optional[int] = None  # RPN proposals kept per image at test time
    box_score_thresh: float = 0.05  # server-side floor; the client applies --threshold on top
    seed: int = 0  # for --weights random: the same export every time


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


def script(model: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "RCNN always returns a (Losses, Detections) tuple in scripting"
        return torch.jit.script(DetectorWrapper(model).eval())


def self_check(scripted: torch.jit.ScriptModule) -> None:
    """Run the scripted module once and check its outputs against the contract."""
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boxes, labels, scores = scripted(image)
    n = scores.shape[0]
    ok = (
        boxes.dtype == torch.float32 and tuple(boxes.shape) == (n, 4)
        and labels.dtype == torch.int64 and tuple(labels.shape) == (n,)
        and scores.dtype == torch.float32
    )
    if not ok:  # pragma: no cover - would be a bug in the wrapper
        raise ExportError(f"exported module breaks the contract: {boxes.shape} {labels.dtype} {scores.shape}")


def export(settings: ExportSettings, repo: Path) -> Path:
    """Write repo/fasterrcnn/1/model.pt and repo/fasterrcnn/config.pbtxt. Returns the model dir."""
    model_dir = Path(repo) / contract.MODEL_NAME
    version_dir = model_dir / "1"
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create {version_dir} ({err.strerror}); pick a writable --repo") from err
    model, weights_desc, untrained = build_model(settings)
    scripted = script(model)
    self_check(scripted)
    transform = model.transform
    options = dict(
        arch=settings.arch,
        weights=weights_desc,
        untrained=untrained,
        class_names=class_names(settings.arch),
        min_size=int(transform.min_size[0]),
        max_size=int(transform.max_size),
        proposals=int(model.rpn._post_nms_top_n["testing"]),
        box_score_thresh=float(model.roi_heads.score_thresh),
    )
    target = version_dir / contract.MODEL_FILENAME
    tmp = target.with_suffix(".pt.tmp")
    scripted.save(str(tmp))
    os.replace(tmp, target)
    (model_dir / contract.CONFIG_FILENAME).write_text(contract.render_config(**options))
    # The same model on a GPU: `tritonserver --model-config-name=gpu` (see docker-compose.gpu.yml).
    configs = model_dir / contract.CONFIGS_DIR
    configs.mkdir(exist_ok=True)
    (configs / f"{contract.GPU_CONFIG_NAME}.pbtxt").write_text(contract.render_config(**options, kind="KIND_GPU"))
    return model_dir


def load_scripted(path: Path) -> torch.jit.ScriptModule:
    """Load an exported model.pt (torchvision imported first: it registers the ops)."""
    return torch.jit.load(str(path), map_location="cpu")


def summary(model_dir: Path) -> str:
    params = contract.config_parameters(contract.read_config(model_dir / contract.CONFIG_FILENAME))
    names = json.loads(params[contract.P_CLASS_NAMES])
    return (
        f"exported {params[contract.P_ARCH]} ({params[contract.P_WEIGHTS]} weights, "
        f"min_size {params[contract.P_MIN_SIZE]}, max_size {params[contract.P_MAX_SIZE]}, "
        f"{params[contract.P_PROPOSALS]} proposals, {len(names)} class ids) to {model_dir}"
    )
