"""streamer.facts: an export's facts inside model.pt, merged into the configs a server loads.

model.pt files here are zip archives laid out as TorchScript writes them (`<archive>/extra/NAME`
for `_extra_files`), made with zipfile: no torch needed. tests/integration/test_exported_model.py
checks a real export's model.pt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streamer import contract, facts

from .test_contract import COCO_FACTS

ROOT = Path(__file__).resolve().parents[2]


def fake_model_pt(path: Path, model_facts=None, archive: str = "model") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{archive}/data.pkl", b"\x80\x02}q\x00.")
        if model_facts is not None:
            z.writestr(f"{archive}/extra/{facts.EXTRA_FILE}", facts.encode(model_facts))
    return path


def committed_copy(tmp_path: Path, model_facts=COCO_FACTS) -> Path:
    """The committed model_repository/ (configs) with fake model.pt files holding `model_facts`."""
    repo = tmp_path / "model_repository"
    shutil.copytree(ROOT / "model_repository", repo)
    for name in (contract.MODEL_NAME, contract.U8_MODEL_NAME):
        fake_model_pt(repo / name / "1" / contract.MODEL_FILENAME, model_facts, archive="model.pt")
    return repo


def test_facts_round_trip_through_model_pt(tmp_path):
    path = fake_model_pt(tmp_path / "model.pt", COCO_FACTS)
    assert facts.read(path) == COCO_FACTS


def test_a_model_pt_without_facts_is_an_older_export(tmp_path):
    assert facts.read(fake_model_pt(tmp_path / "model.pt")) is None


def test_not_a_torchscript_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a zip")
    with pytest.raises(facts.FactsError, match="not a TorchScript file"):
        facts.read(path)


def test_incomplete_facts_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"model/extra/{facts.EXTRA_FILE}", json.dumps({"arch": "x"}))
    with pytest.raises(facts.FactsError, match="lacks some of"):
        facts.read(path)
    with pytest.raises(facts.FactsError, match="lack weights"):
        facts.encode({"arch": "x"})


def test_parameters_are_strings_as_triton_carries_them():
    params = facts.parameters({**COCO_FACTS, "untrained": True})
    assert params["untrained"] == "true" and params["min_size"] == "800"
    assert float(params["box_score_thresh"]) == 0.05
    assert json.loads(params["class_names"])[1] == "person"
    assert list(params) == list(facts.KEYS)


def test_merge_repository_as_nvidias_image_does(tmp_path):
    """The Dockerfile's step, run the way the image runs it: a bare python3 (isolated: no site-packages,
    so nothing but the standard library) on a copy of the committed repository."""
    repo = committed_copy(tmp_path, {**COCO_FACTS, "untrained": True, "weights": "random"})
    script = ROOT / "streamer" / "facts.py"
    result = subprocess.run([shutil.which("python3") or sys.executable, "-I", str(script), str(repo)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("model facts merged into") == 4  # two models: config.pbtxt, configs/gpu.pbtxt
    for config in repo.rglob("*.pbtxt"):
        parsed = contract.read_config(config)
        info = contract.model_info(contract.config_parameters(parsed))
        assert info.untrained is True and info.weights == "random" and info.max_detections == 100, config
        assert contract.check_io(parsed, contract.contract_for(config.parent.name if config.parent.name != "configs"
                                                               else config.parent.parent.name)) == []


def test_merge_refuses_a_repository_that_tells_nothing(tmp_path):
    repo = committed_copy(tmp_path, model_facts=None)
    result = subprocess.run([sys.executable, "-I", str(ROOT / "streamer" / "facts.py"), str(repo)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "carries no model facts" in result.stderr and "streamer export-model" in result.stderr


def test_merge_keeps_an_older_export_that_wrote_its_facts_into_config(tmp_path):
    repo = committed_copy(tmp_path, model_facts=None)
    for name in (contract.MODEL_NAME, contract.U8_MODEL_NAME):
        config = repo / name / contract.CONFIG_FILENAME
        config.write_text(facts.merged(config.read_text(), COCO_FACTS))
    before = {p: p.read_text() for p in repo.rglob("*.pbtxt")}
    assert facts.merge_repository(repo) == []
    assert {p: p.read_text() for p in repo.rglob("*.pbtxt")} == before
