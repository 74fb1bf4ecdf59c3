"""What an export knows about its model, carried inside model.pt and merged into the config a
server loads.

`streamer export-model` writes the model's facts (arch, weights, untrained, input sizes, proposals,
score floor, class names) into model.pt itself, as a TorchScript extra file (`extra/streamer.json`
in the zip archive a TorchScript file is). The committed config.pbtxt files hold only the contract
(tensors, batching, instance group, warm-up), so an export never changes a tracked file, whatever
the weights or sizes. A server still tells remote clients the facts through its model config's
`parameters`, as before: the local server's Python-backend twins are generated with them
(`server.twin_config_text`), and NVIDIA's Triton image merges them into its copy of the
configs at build time (the Dockerfile runs this file: `python3 facts.py /models`).

Standard library only (the Triton image has python3, not this package's dependencies).
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional

EXTRA_FILE = "streamer.json"  # TorchScript `_extra_files` name: <archive>/extra/streamer.json in the zip
MODEL_FILENAME = "model.pt"

# The facts, as config.pbtxt `parameters` keys (string values), in the order a config lists them.
KEYS = ("arch", "weights", "untrained", "min_size", "max_size", "proposals", "box_score_thresh", "class_names")
HEADER = "# What a remote client needs to know about this model (from 1/model.pt's own metadata)."


class FactsError(ValueError):
    """model.pt cannot be read as a TorchScript archive, or its facts are malformed."""


def encode(facts: Mapping[str, object]) -> str:
    """The extra file's text: the facts as JSON (keys of KEYS; class_names a list)."""
    missing = [k for k in KEYS if k not in facts]
    if missing:
        raise FactsError(f"model facts lack {', '.join(missing)}")
    return json.dumps({k: facts[k] for k in KEYS}, indent=1)


def read(model_pt: Path) -> Optional[Dict[str, object]]:
    """The facts inside an exported model.pt; None for a model.pt without them (an older export)."""
    try:
        with zipfile.ZipFile(model_pt) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + EXTRA_FILE)]
            if not names:
                return None
            facts = json.loads(archive.read(names[0]).decode("utf-8"))
    except (zipfile.BadZipFile, OSError) as err:
        raise FactsError(f"{model_pt} is not a TorchScript file ({err})") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FactsError(f"{model_pt}: its {EXTRA_FILE} is not JSON ({err})") from err
    if not isinstance(facts, dict) or any(k not in facts for k in KEYS):
        raise FactsError(f"{model_pt}: its {EXTRA_FILE} lacks some of {', '.join(KEYS)}")
    return facts


def parameters(facts: Mapping[str, object]) -> Dict[str, str]:
    """The facts as config.pbtxt `parameters` (every value a string, as Triton carries them)."""
    out = {}
    for key in KEYS:
        value = facts[key]
        if key == "class_names":
            out[key] = json.dumps(list(value))
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif key == "box_score_thresh":
            out[key] = repr(float(value))
        else:
            out[key] = str(value)
    return out


def parameter_line(key: str, value: str) -> str:
    """One `parameters` entry of config.pbtxt (JSON string quoting is valid protobuf text)."""
    return f"parameters: {{ key: \"{key}\" value: {{ string_value: {json.dumps(value)} }} }}"


def merged(config_text: str, facts: Mapping[str, object]) -> str:
    """`config_text` with the facts added as `parameters` (what a server should load)."""
    lines = [HEADER] + [parameter_line(k, v) for k, v in parameters(facts).items()]
    return config_text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def merge_repository(repo: Path) -> List[Path]:
    """Write the facts of every <model>/1/model.pt into that model's config.pbtxt and
    configs/*.pbtxt (for a server that reads configs as they are: NVIDIA's image). Returns the
    files changed. A model.pt without facts is an export older than this scheme: accepted when its
    config.pbtxt still carries them (that export wrote them there), refused otherwise."""
    changed = []
    for model_pt in sorted(Path(repo).glob(f"*/1/{MODEL_FILENAME}")):
        model_dir = model_pt.parent.parent
        facts = read(model_pt)
        if facts is None:
            config = model_dir / "config.pbtxt"
            if not (config.is_file() and '"class_names"' in config.read_text()):
                raise FactsError(f"{model_pt} carries no model facts and {config} none either: "
                                 "export it again with `streamer export-model`")
            continue
        for config in [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))]:
            if config.is_file():
                config.write_text(merged(config.read_text(), facts))
                changed.append(config)
    return changed


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 facts.py MODEL_REPOSITORY", file=sys.stderr)
        return 2
    try:
        changed = merge_repository(Path(argv[0]))
    except FactsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"model facts merged into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
