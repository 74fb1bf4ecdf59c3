"""The README's commands leave a clean tree: the export steps of `make demo` (WEIGHTS=coco and
WEIGHTS=random) run in a fresh clone of the project, then `git status --porcelain` is empty.

The export command is read from the Makefile's `demo` recipe, so this follows the README's command
as it is. COCO weights come from torchvision's cache layout (a random v2 state dict under the file
name torchvision downloads): nothing is downloaded. `make test` itself is checked the same way by
`.ci/run` (git status after the suite)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamer import facts

from .test_commands import offline_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def clone_of_this_tree(target: Path) -> Path:
    """A fresh repository holding the project's tracked files as they are now (a clone of HEAD
    would miss what is being changed)."""
    for name in git(ROOT, "ls-files", "-z").split("\0"):
        if name and (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "clone")
    return target


def demo_export_args(weights: str) -> list:
    """The `export-model` arguments of the Makefile's demo recipe, with $(WEIGHTS) set."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ndemo:"):]
    line = re.search(r"\$\(BIN\)/streamer export-model ([^\n\\|]*)", recipe).group(1)
    return shlex.split(line.replace("$(WEIGHTS)", weights))


@pytest.fixture(scope="module")
def v2_coco_cache(tmp_path_factory) -> Path:
    """TORCH_HOME with v2's 'COCO' weights cached (random, seed 3) under torchvision's file name."""
    import torch
    from torchvision.models import detection

    torch.manual_seed(3)
    model = detection.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url
    torch.save(model.state_dict(), checkpoints / url.rsplit("/", 1)[-1])
    return home


def test_demo_export_leaves_a_clean_tree(tmp_path, v2_coco_cache):
    clone = clone_of_this_tree(tmp_path / "clone")
    assert git(clone, "status", "--porcelain") == ""
    for weights, untrained in (("random", True), ("coco", False)):
        args = demo_export_args(weights)
        assert "--weights" in args and "--repo" not in args  # the committed model_repository/, as users run it
        result = subprocess.run([sys.executable, "-m", "streamer", "export-model", *args], cwd=clone,
                                env=offline_env(v2_coco_cache), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert git(clone, "status", "--porcelain") == "", (weights, git(clone, "diff"))
        # the export happened, and its facts are in the (ignored) model files
        for name in ("fasterrcnn", "fasterrcnn_u8"):
            found = facts.read(clone / "model_repository" / name / "1" / "model.pt")
            assert found["untrained"] is untrained and found["min_size"] == 480, (weights, found)
            assert found["weights"].startswith(weights)
    # what `make demo` writes next (out/) and `make install` (.venv) are ignored too
    ignored = git(clone, "check-ignore", "out/sample_annotated.mp4", ".venv/bin/python").split()
    assert ignored == ["out/sample_annotated.mp4", ".venv/bin/python"]
