"""An exported model against the committed configs (moved from tests/unit/test_container.py: these
need torch and an export). The export writes both configs; the embedded server's twins declare what
the configs declare; the TorchScript modules' outputs on a real frame match the declared outputs."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from streamer import contract
from streamer.server import EmbeddedServer, EmbeddedServerSettings

from ..helpers import frame_image
from ..unit.test_container import MODEL_NAMES, check_gpu_variant, io_of


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_export_writes_both_configs(repo_v2, name):
    check_gpu_variant(repo_v2 / name)


@pytest.mark.slow
def test_twin_builder_ignores_the_configs_folder(repo_v2):
    server = EmbeddedServer(EmbeddedServerSettings(repo=repo_v2))
    try:
        server._prepare()
        twins = server.workdir / "repo"
        assert sorted(p.name for p in twins.iterdir()) == sorted(MODEL_NAMES)
        for name in MODEL_NAMES:
            assert sorted(p.name for p in (twins / name).iterdir()) == ["1", contract.CONFIG_FILENAME]
            twin = contract.read_config(twins / name / contract.CONFIG_FILENAME)
            assert io_of(twin) == io_of(contract.read_config(repo_v2 / name / contract.CONFIG_FILENAME))
            # the export's facts, from model.pt, are what the twin tells clients
            info = contract.model_info(contract.config_parameters(twin))
            assert info.untrained and info.min_size == 128 and info.arch == "fasterrcnn_resnet50_fpn_v2"
    finally:
        server.cleanup()


@pytest.mark.slow
def test_torchscript_outputs_match_the_declared_outputs(repo_v2):
    import numpy as np
    import torch
    import torchvision  # noqa: F401  (registers torchvision::nms and roi_align before loading)

    model_dir = repo_v2 / contract.MODEL_NAME
    config = contract.read_config(model_dir / contract.CONFIG_FILENAME)
    module = torch.jit.load(str(model_dir / "1" / contract.MODEL_FILENAME), map_location="cpu")
    image = torch.from_numpy(np.ascontiguousarray(frame_image(3, 200, 150).transpose(2, 0, 1))).float() / 255
    declared_input = config.input[0]
    assert image.dtype == torch.float32 and image.dim() == len(declared_input.dims)
    with torch.inference_mode():
        outputs = module(image)
    assert isinstance(outputs, tuple) and len(outputs) == len(config.output)
    dtypes = {"TYPE_FP32": torch.float32, "TYPE_INT64": torch.int64}
    n = outputs[0].shape[0]
    assert n > 0  # untrained v2 at a small size emits boxes: the shapes below are not vacuous
    for tensor, declared in zip(outputs, config.output):
        assert tensor.dtype == dtypes[mc.DataType.Name(declared.data_type)], declared.name
        assert tensor.dim() == len(declared.dims), declared.name
        for size, dim in zip(tensor.shape, declared.dims):
            assert dim == -1 or size == dim, declared.name
        assert tensor.shape[0] == n, declared.name


@pytest.mark.slow
def test_u8_torchscript_outputs_match_the_declared_outputs(repo_v2):
    import numpy as np
    import torch
    import torchvision  # noqa: F401  (registers torchvision::nms and roi_align before loading)

    model_dir = repo_v2 / contract.U8_MODEL_NAME
    config = contract.read_config(model_dir / contract.CONFIG_FILENAME)
    module = torch.jit.load(str(model_dir / "1" / contract.MODEL_FILENAME), map_location="cpu")
    frames = np.stack([frame_image(3, 200, 150), frame_image(4, 200, 150)])  # a batch of 2, [B, H, W, 3]
    assert list(frames.shape[1:]) == [150, 200, config.input[0].dims[2]]
    with torch.inference_mode():
        outputs = module(torch.from_numpy(frames))
    assert isinstance(outputs, tuple) and len(outputs) == len(config.output)
    dtypes = {"TYPE_FP32": torch.float32, "TYPE_INT64": torch.int64, "TYPE_INT32": torch.int32}
    for tensor, declared in zip(outputs, config.output):
        assert tensor.dtype == dtypes[mc.DataType.Name(declared.data_type)], declared.name
        assert list(tensor.shape) == [2, *declared.dims], declared.name  # batch dimension first
    boxes, labels, scores, count = outputs
    for i in range(2):
        n = int(count[i, 0])
        assert n > 0  # untrained v2 at a small size emits boxes: the padding checks are not vacuous
        assert bool((scores[i, n:] == 0).all() and (boxes[i, n:] == 0).all() and (labels[i, n:] == 0).all())
        assert bool((scores[i, :n] > 0).all()) and bool((scores[i, 1:n] <= scores[i, :n - 1]).all())
