"""The wheel holds the whole package: every module under streamer/ (subpackages found without a
list to keep current) and every data file (the Python-backend model, static web files).

It is built offline, without build isolation, from a copy of exactly what the client image
copies before its `pip install .` (docker/client.Dockerfile), so the image's build context is
checked too, and the repository gets no build/ or *.egg-info. About a second.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streamer"
CLIENT_DOCKERFILE = ROOT / "docker" / "client.Dockerfile"
BYTE_CODE = shutil.ignore_patterns("__pycache__", "*.pyc")


def source_files() -> List[str]:
    """Every file under streamer/ as a wheel would name it, byte code aside."""
    return sorted(str(p.relative_to(ROOT).as_posix()) for p in PACKAGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def copies_before_install(dockerfile: Path) -> List[Tuple[List[str], str]]:
    """The (sources, destination) of each COPY before the RUN that pip-installs the package."""
    copies = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0].upper() == "RUN" and "pip install" in " ".join(words):
            return copies
        if words[0].upper() == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            assert not any(w.startswith("--from") for w in words), "a COPY from another stage before the install"
            copies.append((args[:-1], args[-1]))
    pytest.fail(f"{dockerfile.relative_to(ROOT)}: no RUN ... pip install found")


def build_context_copy(into: Path) -> Path:
    """What the client image has in its WORKDIR when it runs `pip install .`."""
    into.mkdir()
    for sources, destination in copies_before_install(CLIENT_DOCKERFILE):
        for source in sources:
            origin = ROOT / source
            target = into / destination
            if origin.is_dir():  # COPY dir/ dest/: the folder's contents into dest
                shutil.copytree(origin, target, ignore=BYTE_CODE, dirs_exist_ok=True)
            else:
                target = target / origin.name if destination.endswith("/") else target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    return into


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The wheel, built once for this module."""
    tmp = tmp_path_factory.mktemp("wheel")
    leftovers = [ROOT / "build", ROOT / "streamer.egg-info"]
    there_before = {p for p in leftovers if p.exists()}
    source = build_context_copy(tmp / "context")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(tmp / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, cwd=tmp)
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    assert {p for p in leftovers if p.exists()} == there_before, "the build left files in the repository"
    (path,) = (tmp / "dist").glob("streamer-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel(built) -> List[str]:
    """The wheel's file names."""
    with zipfile.ZipFile(built) as archive:
        return archive.namelist()


def test_the_wheel_holds_every_module_and_data_file_under_streamer(wheel):
    expected = source_files()
    assert "streamer/cli.py" in expected and "streamer/backend/model.py" in expected
    missing = sorted(set(expected) - set(wheel))
    assert not missing, "files under streamer/ that the wheel lacks (pyproject.toml [tool.setuptools]):\n" + \
        "\n".join(missing)


def test_the_wheel_holds_nothing_but_the_package_and_no_byte_code(wheel):
    top = {name.split("/")[0] for name in wheel}
    assert {t for t in top if not t.endswith(".dist-info")} == {"streamer"}, top
    assert not [name for name in wheel if name.endswith(".pyc") or "__pycache__" in name]
    assert not [name for name in wheel if name.startswith("streamer/") and name not in source_files()]


def test_the_wheel_declares_the_command(built, wheel):
    """The client image's ENTRYPOINT is `streamer`."""
    (entry_points,) = [name for name in wheel if name.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(built) as archive:
        text = archive.read(entry_points).decode()
    assert "[console_scripts]\nstreamer = streamer.cli:main" in text, text
