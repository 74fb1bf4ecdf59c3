"""streamer.contract (config.pbtxt, check_io, ModelInfo), server.twin_config_text, cli.TritonAddress."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from tritonclient.grpc import model_config_pb2 as mc

from streamer import contract, facts
from streamer.cli import TritonAddress
from streamer.server import twin_config_text

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "model_repository" / contract.MODEL_NAME / contract.CONFIG_FILENAME

# torchvision's COCO category names (weights meta): 91 ids, 'N/A' gaps. Typed here so
# these tests need no torch.
COCO_NAMES = [
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
    "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
]


# The facts a COCO export of v2 at its defaults writes into model.pt (see streamer/facts.py).
COCO_FACTS = dict(arch="fasterrcnn_resnet50_fpn_v2", weights="coco", untrained=False, min_size=800, max_size=1333,
                  proposals=1000, box_score_thresh=0.05, class_names=COCO_NAMES)


def rendered_config() -> str:
    return contract.render_config()


@pytest.fixture(scope="module")
def config_text() -> str:
    """What a server loads: the committed config.pbtxt (the contract alone) with an export's facts."""
    return facts.merged(COMMITTED.read_text(), COCO_FACTS)


@pytest.fixture
def config(config_text) -> mc.ModelConfig:
    return contract.parse_config(config_text)


# -- the model config --------------------------------------------------------------------------


def test_config_matches_the_contract(config):
    assert config.name == "fasterrcnn"
    assert contract.check_io(config) == []
    assert config.platform == "pytorch_libtorch"
    assert config.backend == ""
    assert config.max_batch_size == 0
    assert len(config.instance_group) >= 1
    assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
    assert [t.name for t in config.input] == ["input__0"]
    assert [t.name for t in config.output] == ["output__0", "output__1", "output__2"]
    assert list(config.output[0].dims) == [-1, 4]
    assert config.output[1].data_type == mc.TYPE_INT64


def test_config_parameters_describe_the_model(config):
    info = contract.model_info(contract.config_parameters(config))
    assert info.arch in contract.ARCHS
    assert len(info.class_names) == 91
    assert info.class_names[0] == "__background__"
    assert info.class_names[1] == "person"
    assert info.class_names[3] == "car"
    assert info.class_names[12] == "N/A"
    assert list(info.class_names) == COCO_NAMES
    assert info.weights
    assert isinstance(info.untrained, bool)


def test_committed_config_is_the_contract_alone():
    """An export never changes a tracked file: the committed configs carry no export's facts (they
    are in model.pt), only K, which is part of the u8 contract's shapes."""
    for name in (contract.MODEL_NAME, contract.U8_MODEL_NAME):
        for path in (ROOT / "model_repository" / name).rglob("*.pbtxt"):
            params = contract.config_parameters(contract.read_config(path))
            assert not set(params) & set(facts.KEYS), path
            assert params[contract.P_MAX_DETECTIONS] == "100"


def test_fact_keys_are_the_parameters_clients_read():
    assert set(facts.KEYS) == {contract.P_ARCH, contract.P_WEIGHTS, contract.P_UNTRAINED, contract.P_MIN_SIZE,
                               contract.P_MAX_SIZE, contract.P_PROPOSALS, contract.P_BOX_SCORE_THRESH,
                               contract.P_CLASS_NAMES}


def test_merged_config_round_trips_the_facts():
    config = contract.parse_config(facts.merged(rendered_config(), COCO_FACTS))
    params = contract.config_parameters(config)
    info = contract.model_info(params)
    assert info.arch == "fasterrcnn_resnet50_fpn_v2"
    assert info.weights == "coco" and info.untrained is False
    assert info.min_size == 800 and info.max_size == 1333
    assert params["proposals"] == "1000"
    assert float(params["box_score_thresh"]) == pytest.approx(0.05)
    assert json.loads(params["class_names"]) == COCO_NAMES


def test_parse_config_rejects_bad_syntax():
    with pytest.raises(ValueError, match="does not parse"):
        contract.parse_config('name: "x"\ninput [ { name: ')


def test_read_config(tmp_path, config_text):
    path = tmp_path / "config.pbtxt"
    path.write_text(config_text)
    assert contract.read_config(path) == contract.parse_config(config_text)


# -- ModelInfo ----------------------------------------------------------------------------------


@pytest.fixture
def info(config) -> contract.ModelInfo:
    return contract.model_info(contract.config_parameters(config))


def test_label_ids_case_insensitive(info):
    assert info.label_ids(["person", "Car", " TRAFFIC LIGHT "]) == [1, 3, 10]
    assert info.label_ids([]) == []


def test_label_ids_unknown_names_raise_naming_them(info):
    with pytest.raises(KeyError) as err:
        info.label_ids(["person", "unicorn", "dragon"])
    text = str(err.value)
    assert "unicorn" in text and "dragon" in text and "person" not in text


@pytest.mark.parametrize("name", ["N/A", "__background__"])
def test_label_ids_placeholders_are_not_classes(info, name):
    with pytest.raises(KeyError):
        info.label_ids([name])


def test_name_of(info):
    assert info.name_of(1) == "person"
    assert info.name_of(90) == "toothbrush"
    assert info.name_of(91) == "class 91"
    assert info.name_of(-1) == "class -1"
    assert info.name_of(1000) == "class 1000"


def test_model_info_missing_parameters_raise():
    with pytest.raises(ValueError, match="class_names"):
        contract.model_info({"arch": "a", "weights": "w", "untrained": "true"})


# -- check_io ---------------------------------------------------------------------------------------


def test_check_io_reports_wrong_dtype(config):
    bad = copy.deepcopy(config)
    bad.output[1].data_type = mc.TYPE_INT32
    problems = contract.check_io(bad)
    assert len(problems) == 1
    assert "output__1" in problems[0] and "TYPE_INT32" in problems[0] and "TYPE_INT64" in problems[0]


def test_check_io_reports_wrong_dims(config):
    bad = copy.deepcopy(config)
    del bad.input[0].dims[:]
    bad.input[0].dims.extend([1, 3, -1, -1])
    problems = contract.check_io(bad)
    assert len(problems) == 1 and "input__0" in problems[0] and "dims" in problems[0]


def test_check_io_reports_missing_output(config):
    bad = copy.deepcopy(config)
    del bad.output[2]
    problems = contract.check_io(bad)
    assert problems == ["output output__2 is missing"]


def test_check_io_reports_extra_input(config):
    bad = copy.deepcopy(config)
    extra = bad.input.add()
    extra.name = "input__1"
    extra.data_type = mc.TYPE_FP32
    extra.dims.extend([1])
    problems = contract.check_io(bad)
    assert len(problems) == 1 and "unexpected input" in problems[0] and "input__1" in problems[0]


def test_check_io_reports_max_batch_size(config):
    bad = copy.deepcopy(config)
    bad.max_batch_size = 8
    problems = contract.check_io(bad)
    assert len(problems) == 1 and "max_batch_size" in problems[0] and "8" in problems[0]


def test_check_io_reports_every_problem_at_once(config):
    bad = copy.deepcopy(config)
    bad.max_batch_size = 1
    bad.output[0].data_type = mc.TYPE_FP16
    bad.output[1].name = "labels"
    assert len(contract.check_io(bad)) == 4  # dtype, missing output__1, unexpected labels, batch


# -- the Python-backend twin ---------------------------------------------------------------------


def test_twin_config(config_text, config):
    twin = contract.parse_config(twin_config_text(config_text, threads=2))
    assert twin.backend == "python"
    assert twin.platform == ""
    assert twin.name == config.name
    assert list(twin.input) == list(config.input)
    assert list(twin.output) == list(config.output)
    assert twin.max_batch_size == 0
    assert contract.check_io(twin) == []
    assert len(twin.instance_group) >= 1
    assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in twin.instance_group)
    params = contract.config_parameters(twin)
    assert params["threads"] == "2"
    # Everything the client reads about the model travels to the twin.
    assert contract.model_info(params) == contract.model_info(contract.config_parameters(config))


def test_twin_gets_the_facts_of_model_pt():
    """The local server's twin of the committed config carries the facts model.pt holds: how a client of
    `streamer serve` learns arch, weights and class names."""
    committed = COMMITTED.read_text()
    bare = contract.config_parameters(contract.parse_config(twin_config_text(committed, threads=2)))
    assert "arch" not in bare
    with pytest.raises(ValueError, match="re-run `streamer export-model`"):
        contract.model_info(bare)
    twin = contract.parse_config(twin_config_text(committed, threads=2, model_facts=COCO_FACTS))
    info = contract.model_info(contract.config_parameters(twin))
    assert info.arch == COCO_FACTS["arch"] and info.untrained is False and list(info.class_names) == COCO_NAMES
    assert info.max_detections == 100


def test_twin_of_a_gpu_config_runs_on_cpu(config_text):
    gpu = contract.parse_config(config_text)
    del gpu.instance_group[:]
    group = gpu.instance_group.add()
    group.count = 2
    group.kind = mc.ModelInstanceGroup.KIND_GPU
    group.gpus.extend([0])
    from google.protobuf import text_format

    twin = contract.parse_config(twin_config_text(text_format.MessageToString(gpu), threads=4))
    assert len(twin.instance_group) == 1
    assert twin.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert list(twin.instance_group[0].gpus) == []
    assert twin.instance_group[0].count == 2
    assert contract.config_parameters(twin)["threads"] == "4"


# -- TritonAddress -------------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("localhost:8001", "localhost:8001"),
    ("host", "host:8001"),
    ("grpc://h:9", "h:9"),
    (" 10.0.0.5:8001 ", "10.0.0.5:8001"),
    ("h:065535", "h:65535"),
])
def test_triton_address_accepts(value, expected):
    targets = TritonAddress().convert(value, None, None)  # parsed once, into typed targets
    assert len(targets) == 1 and targets[0].text == expected and not targets[0].dns


@pytest.mark.parametrize("value,why", [
    ("http://h:8000", "not a http URL"),
    ("h:0", "port"),
    ("h:65536", "port"),
    ("h:abc", "port"),
    (":8001", "missing host"),
    ("h:", "port"),
])
def test_triton_address_rejects(value, why):
    with pytest.raises(click.BadParameter, match=why):
        TritonAddress().convert(value, None, None)


def test_triton_address_in_a_command():
    @click.command()
    @click.option("--triton", type=TritonAddress())
    def cmd(triton):
        click.echo(f"got {','.join(t.text for t in triton)}")

    runner = CliRunner()
    ok = runner.invoke(cmd, ["--triton", "example"])
    assert ok.exit_code == 0 and ok.output.strip() == "got example:8001"
    bad = runner.invoke(cmd, ["--triton", "http://example:8000"])
    assert bad.exit_code == 2
    assert "gRPC endpoint as HOST:PORT" in bad.output


def test_committed_config_is_what_export_writes():
    assert COMMITTED.read_text() == contract.render_config()


# -- the batchable uint8 model (fasterrcnn_u8) ---------------------------------------------------

COMMITTED_U8 = ROOT / "model_repository" / contract.U8_MODEL_NAME / contract.CONFIG_FILENAME


def rendered_u8_config(max_detections: int = 100) -> str:
    return contract.render_config(max_detections=max_detections, model=contract.U8)


@pytest.fixture
def u8_config() -> mc.ModelConfig:
    return contract.parse_config(facts.merged(COMMITTED_U8.read_text(), COCO_FACTS))


def test_u8_config_matches_its_contract(u8_config):
    assert u8_config.name == "fasterrcnn_u8"
    assert contract.check_io(u8_config, contract.U8) == []
    assert u8_config.platform == "pytorch_libtorch"
    assert u8_config.max_batch_size == 8
    assert u8_config.HasField("dynamic_batching")
    tensors = [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in (*u8_config.input, *u8_config.output)]
    assert tensors == [
        ("image__0", "TYPE_UINT8", [-1, -1, 3]),
        ("boxes__0", "TYPE_FP32", [100, 4]),
        ("labels__1", "TYPE_INT64", [100]),
        ("scores__2", "TYPE_FP32", [100]),
        ("count__3", "TYPE_INT32", [1]),
    ]


def test_u8_config_carries_the_seed_parameters_plus_k():
    seed = contract.config_parameters(contract.read_config(COMMITTED))
    u8 = contract.config_parameters(contract.read_config(COMMITTED_U8))
    assert u8 == seed  # the same backend options and K (the facts of one export are in both model.pt)
    assert u8["max_detections"] == "100"
    merged = contract.parse_config(facts.merged(COMMITTED_U8.read_text(), COCO_FACTS))
    assert contract.model_info(contract.config_parameters(merged)).max_detections == 100


def test_the_contracts_reject_each_other(u8_config, config):
    assert contract.check_io(u8_config) != []  # the seed's contract
    problems = contract.check_io(config, contract.U8)
    assert any("image__0 is missing" in p for p in problems)
    assert any("max_batch_size is 0, expected at least 1" in p for p in problems)


def test_u8_outputs_follow_max_detections():
    config = contract.parse_config(rendered_u8_config(max_detections=300))
    assert list(config.output[0].dims) == [300, 4] and list(config.output[2].dims) == [300]
    assert contract.check_io(config, contract.U8) == []
    bad = copy.deepcopy(config)
    bad.parameters["max_detections"].string_value = "100"
    problems = contract.check_io(bad, contract.U8)
    assert any("boxes__0 has dims [300, 4], expected [100, 4]" in p for p in problems)


@pytest.mark.parametrize("name", [contract.MODEL_NAME, contract.U8_MODEL_NAME])
def test_both_models_warm_up_before_they_are_ready(name):
    config = contract.read_config(ROOT / "model_repository" / name / contract.CONFIG_FILENAME)
    served = contract.contract_for(name)
    [warmup] = config.model_warmup
    assert warmup.batch_size == 1  # Triton skips a batch_size 0 sample
    assert warmup.count > 1  # the profiling executor needs several runs
    [(key, sample)] = warmup.inputs.items()
    assert key == served.input.name
    assert mc.DataType.Name(sample.data_type) == served.input.config_type
    assert len(sample.dims) == len(served.input.dims) and all(d > 0 for d in sample.dims)
    assert sample.zero_data  # FP32 random_data would be random bytes: NaNs


def test_u8_twin_keeps_batching_and_warmup(u8_config):
    twin = contract.parse_config(twin_config_text(COMMITTED_U8.read_text(), threads=2))
    assert twin.backend == "python" and twin.platform == ""
    assert contract.check_io(twin, contract.U8) == []
    assert twin.max_batch_size == u8_config.max_batch_size
    assert twin.dynamic_batching == u8_config.dynamic_batching
    assert list(twin.model_warmup) == list(u8_config.model_warmup)


def test_committed_u8_config_is_what_export_writes():
    assert COMMITTED_U8.read_text() == rendered_u8_config()


def test_contract_for():
    assert contract.contract_for("fasterrcnn") is contract.SEED
    assert contract.contract_for("fasterrcnn_u8") is contract.U8
    with pytest.raises(KeyError):
        contract.contract_for("yolo")
