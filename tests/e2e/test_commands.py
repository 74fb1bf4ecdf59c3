"""export-model, serve, detect, doctor, and the client's independence from torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from streamer import contract, facts
from streamer.server import free_port

from ..helpers import (STREAMER, alive, children, frame_image, process_name, streamer, wait_until,
                       write_clip)
from .test_cli_errors import one_line_error

pytestmark = pytest.mark.slow

MOBILENET_320 = "fasterrcnn_mobilenet_v3_large_320_fpn"


# -- export-model ----------------------------------------------------------------------------

def offline_env(torch_home: Path) -> dict:
    """No internet whatever the machine has: every download goes to a closed local port."""
    env = dict(os.environ, TORCH_HOME=str(torch_home))
    for key in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        env[key] = "http://127.0.0.1:9"
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    return env


@pytest.fixture(scope="module")
def mobilenet_state_dict(tmp_path_factory):
    """A state dict for the 320 MobileNet (random weights, seed 7) and the file name torchvision caches it as."""
    import torch
    from torchvision.models import detection

    torch.manual_seed(7)
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path_factory.mktemp("weights") / "mobilenet320.pth"
    torch.save(model.state_dict(), path)
    url = detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1.url
    return path, url.rsplit("/", 1)[-1]


CLS_SCORE = "roi_heads.box_predictor.cls_score.weight"


def exported_tensors(repo: Path, name: str = "fasterrcnn") -> list:
    """The weights in an exported model.pt: the model is frozen, so they are graph constants."""
    from streamer.export import load_scripted

    module = load_scripted(repo / name / "1" / "model.pt")
    return [node.output().toIValue() for node in module.graph.findAllNodes("prim::Constant")
            if node.output().type().kind() == "TensorType"]


def exported_facts(repo: Path) -> dict:
    """What the export wrote into both model.pt files (as config parameters: strings); the same in both."""
    found = [facts.read(repo / name / "1" / "model.pt") for name in ("fasterrcnn", "fasterrcnn_u8")]
    assert found[0] is not None and found[0] == found[1]
    return facts.parameters(found[0])


def holds(repo: Path, weight) -> bool:
    """Both exported models carry exactly this weight tensor."""
    import torch

    return all(any(t.shape == weight.shape and torch.equal(t, weight) for t in exported_tensors(repo, name))
               for name in ("fasterrcnn", "fasterrcnn_u8"))


def test_coco_weights_come_from_torchvisions_cache(tmp_path, mobilenet_state_dict):
    import torch

    path, cache_name = mobilenet_state_dict
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / cache_name).write_bytes(path.read_bytes())
    repo = tmp_path / "repo"

    result = streamer("export-model", "--arch", MOBILENET_320, "--weights", "coco", "--repo", repo,
                      env=offline_env(tmp_path / "torch_home"), timeout=300)

    assert result.returncode == 0, result.stderr
    params = exported_facts(repo)
    assert params["untrained"] == "false" and params["weights"] == f"coco ({cache_name})"
    assert params["arch"] == MOBILENET_320
    saved = torch.load(path)[CLS_SCORE]
    assert holds(repo, saved)  # the cached weights, not fresh random ones


def test_coco_weights_offline_without_cache_fail_naming_both_alternatives(tmp_path):
    result = streamer("export-model", "--arch", MOBILENET_320, "--weights", "coco", "--repo", tmp_path / "repo",
                      env=offline_env(tmp_path / "empty_torch_home"), timeout=300)
    line = one_line_error(result, 7, "COCO weights", "--weights PATH", "--weights random")
    assert "nothing cached at" in line
    assert not (tmp_path / "repo" / "fasterrcnn" / "1" / "model.pt").exists()


@pytest.mark.parametrize("wrapped", [False, True], ids=["state-dict", "checkpoint-dict"])
def test_local_state_dict(wrapped, tmp_path, mobilenet_state_dict):
    import torch

    path, _ = mobilenet_state_dict
    if wrapped:
        checkpoint = tmp_path / "checkpoint.pth"
        torch.save({"model": torch.load(path), "epoch": 3}, checkpoint)
        path = checkpoint
    repo = tmp_path / "repo"
    result = streamer("export-model", "--arch", MOBILENET_320, "--weights", path, "--repo", repo, timeout=300)
    assert result.returncode == 0, result.stderr
    params = exported_facts(repo)
    assert params["untrained"] == "false" and path.name in params["weights"]
    assert holds(repo, torch.load(mobilenet_state_dict[0])[CLS_SCORE])


def test_state_dict_for_another_arch_is_refused(tmp_path, mobilenet_state_dict):
    path, _ = mobilenet_state_dict
    result = streamer("export-model", "--arch", "fasterrcnn_resnet50_fpn_v2", "--weights", path,
                      "--repo", tmp_path / "repo", timeout=300)
    one_line_error(result, 7, "not a state dict for fasterrcnn_resnet50_fpn_v2", "--arch")


def test_exported_model_is_scripted_and_follows_the_contract(repo_v2):
    import torch

    from streamer.export import load_scripted

    config = contract.read_config(repo_v2 / "fasterrcnn" / "config.pbtxt")
    assert contract.check_io(config) == [] and config.platform == "pytorch_libtorch"
    params = exported_facts(repo_v2)
    assert params["untrained"] == "true" and params["min_size"] == "128" and params["proposals"] == "100"
    model = load_scripted(repo_v2 / "fasterrcnn" / "1" / "model.pt")
    assert "is_scripting" not in model.code and "torch.zeros" in model.code  # compiled control flow
    counts = set()
    for h, w in ((150, 200), (60, 90)):
        image = torch.from_numpy(frame_image(1).transpose(2, 0, 1)[:, :h, :w].astype(np.float32) / 255)
        with torch.inference_mode():
            boxes, labels, scores = model(image.contiguous())
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64 and scores.dtype == torch.float32
        assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape
        counts.add(len(scores))
    assert len(counts) == 2  # N follows the image: not a traced, fixed-shape graph


# -- serve ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_runs_until_signalled_then_leaves_nothing(sig, repo_empty):
    http, grpc, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(STREAMER + ["serve", "--model-repo", str(repo_empty), "--http-port", str(http),
                                        "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        def ready():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return proc.poll() is not None

        wait_until(ready, 180, what="serve to be ready")
        assert proc.poll() is None
        def metrics_text() -> bytes:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
                    return r.read()
            except OSError:
                return b""

        # tritonserver may open its metrics port a moment after it reports ready
        wait_until(lambda: b"nv_inference_count" in metrics_text(), 30, what="the metrics endpoint")
        servers = [pid for pid in children(proc.pid) if process_name(pid) == "tritonserver"]
        assert len(servers) == 1
        stubs = [pid for pid in children(servers[0])]
        assert stubs, "the model's backend stub should be running"
        assert list(Path("/dev/shm").glob(f"streamer-{proc.pid}-*"))
        doctor = streamer("doctor", "--triton", f"127.0.0.1:{grpc}", timeout=120)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "Triton ready" in stdout and f"127.0.0.1:{grpc}" in stdout
    assert "stopped" in stderr
    assert not any(alive(pid) for pid in servers + stubs)
    assert not list(Path("/dev/shm").glob(f"streamer-{proc.pid}-*"))


# -- detect, doctor --------------------------------------------------------------------------------

def test_detect_prints_and_draws(tmp_path, server_v2):
    import cv2

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frame_image(5)[:, :, ::-1])
    out = tmp_path / "annotated.png"
    result = streamer("detect", image, "--out", out, "--triton", server_v2.grpc_url, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("  ")]
    assert lines and "detection(s) >= 0.5" in result.stdout
    name, score = lines[0].split()[:2]
    assert 0.5 <= float(score) <= 1.0
    drawn = cv2.imread(str(out))
    assert drawn.shape == (150, 200, 3) and np.abs(drawn.astype(int) - cv2.imread(str(image))).sum() > 0


def test_doctor_reports_each_check(server_v2):
    result = streamer("doctor", "--triton", server_v2.grpc_url, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("[ok]   server live", "[ok]   server ready", "[ok]   model ready",
                 "[ok]   inputs/outputs match the contract", "[ok]   one inference", "[ok]   raw outputs",
                 "[warn] the model's weights are UNTRAINED", "[ok]   detections"):
        assert line in result.stdout, result.stdout


def test_doctor_explains_empty_detections(server_mobilenet):
    result = streamer("doctor", "--triton", server_mobilenet.grpc_url, timeout=120)
    assert result.returncode == 0, result.stdout
    assert "[warn] nothing to draw: the model returned no boxes at all (its weights are UNTRAINED" in result.stdout


def test_doctor_without_a_server():
    result = streamer("doctor", "--triton", f"127.0.0.1:{free_port()}", timeout=60)
    assert result.returncode == 4
    assert "[FAIL] no Triton server answers" in result.stdout


# -- the client never imports torch -------------------------------------------------------------------

def test_client_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import streamer.cli, streamer.triton, streamer.sources, streamer.sinks, streamer.render, "
        "streamer.pipeline, streamer.server, streamer.doctor, streamer.contract, streamer.media, streamer.rerender\n"
        "from click.testing import CliRunner\n"
        "assert CliRunner().invoke(streamer.cli.cli, ['run', '--help']).exit_code == 0\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'torchvision')))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_whole_run_works_where_torch_cannot_be_imported(tmp_path, server_empty):
    poison = tmp_path / "poison"
    for name in ("torch", "torchvision"):
        (poison / name).mkdir(parents=True)
        (poison / name / "__init__.py").write_text(f"raise ImportError('the client imported {name}')\n")
    clip = write_clip(tmp_path / "in.mp4", 5)
    env = dict(os.environ, PYTHONPATH=f"{poison}:{os.environ.get('PYTHONPATH', '')}")
    result = streamer("run", clip, "--out", tmp_path / "o.mp4", "--triton", server_empty.grpc_url, env=env)
    assert result.returncode == 0, result.stderr
    assert "written 5" in result.stdout
