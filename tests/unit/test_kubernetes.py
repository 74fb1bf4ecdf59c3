"""deploy/kubernetes, checked offline: rendered by the real kustomize (inside `kubectl`), every
core object validated against the pinned Kubernetes schemas (kubernetes-validate, strict: unknown
fields fail), the Prometheus operator's objects against the models generated from its CRD schemas
(cloudcoil-models-prometheus-operator), and the references between the objects followed: the
Services, monitors, policies and the autoscaler reach the pods, ports and names they mean.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pydantic
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, ServiceMonitor

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
ADAPTER_VALUES = KUBE / "monitoring" / "prometheus-adapter-values.yaml"
OVERLAYS = ("cpu", "gpu")
# The Kubernetes release the manifests are validated against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.32.0"
CRD_MODELS = {"ServiceMonitor": ServiceMonitor, "PodMonitor": PodMonitor}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("`kubectl` is not installed: these tests render deploy/kubernetes with `kubectl kustomize` "
                    "(kustomize v5 is built into kubectl); install kubectl and run them again")
    return path


def render(directory: Path) -> list:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def overlay(tmp_path: Path, *, resource: str = "base", components=(), extra: dict = None, files: dict = None) -> list:
    """Render a kustomization of our own on top of ours (what a user's site overlay does)."""
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [rel(KUBE / resource)], "components": [rel(KUBE / "components" / c) for c in components]}
    kustomization.update(extra or {})
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    return render(tmp_path)


@pytest.fixture(scope="module")
def rendered() -> dict:
    return {name: render(KUBE / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def cpu(rendered) -> list:
    return rendered["cpu"]


def find(objects: list, kind: str, name: str) -> dict:
    """The object of that kind and name; generated ConfigMaps/Secrets carry a hash suffix."""
    found = [o for o in objects if o["kind"] == kind
             and (o["metadata"]["name"] == name or re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", o["metadata"]["name"]))]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def of_kind(objects: list, kind: str) -> list:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def container(deployment: dict, name: str = None) -> dict:
    containers = pod_spec(deployment)["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels only: the manifests use nothing else) against labels."""
    assert set(selector) <= {"matchLabels"}, f"selector form not handled here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def container_ports(deployment: dict) -> dict:
    return {p["name"]: p["containerPort"] for c in pod_spec(deployment)["containers"] for p in c.get("ports", [])}


def option(args: list, name: str) -> str:
    return args[args.index(name) + 1]


def diff_paths(a, b, path=()) -> set:
    """Paths at which two JSON-like values differ (a whole list when its length differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return set().union(*(diff_paths(a.get(k), b.get(k), path + (k,)) if k in a and k in b else {path + (k,)}
                             for k in set(a) | set(b)))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(set(), *(diff_paths(x, y, path + (i,)) for i, (x, y) in enumerate(zip(a, b))))
    return set() if a == b else {path}


def check_crd_object(obj: dict) -> None:
    """Validate against the model generated from the CRD's schema; a field the schema does not
    know is dropped by the model, so the round trip must give the object back unchanged."""
    model = CRD_MODELS[obj["kind"]]
    parsed = model.model_validate(obj)
    again = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert again == obj, f"{obj['kind']}/{obj['metadata']['name']}: fields the CRD schema does not know or " \
                         f"changed: {sorted(diff_paths(obj, again))}"


# -- rendering and schemas -----------------------------------------------------------------------


def test_missing_kubectl_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="`kubectl` is not installed"):
        kubectl()


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_renders_the_whole_deployment(rendered, name):
    objects = rendered[name]
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    for kind, obj_name in [("Namespace", "streamer"), ("Deployment", "triton"), ("Service", "triton"),
                           ("Service", "triton-headless"), ("HorizontalPodAutoscaler", "triton"),
                           ("ServiceMonitor", "triton"), ("Deployment", "streamer"), ("ConfigMap", "streamer-cameras"),
                           ("Secret", "streamer-credentials"), ("PersistentVolumeClaim", "streamer-recordings"),
                           ("PodMonitor", "streamer"), ("NetworkPolicy", "triton"), ("NetworkPolicy", "streamer")]:
        find(objects, kind, obj_name)
    assert len(objects) == 13, kinds
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "streamer", obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "streamer"


@pytest.mark.parametrize("name", OVERLAYS)
def test_core_objects_validate_against_the_kubernetes_schema(rendered, name):
    """Every object is checked, by the Kubernetes schema or by its CRD's: none is skipped."""
    for obj in rendered[name]:
        if obj["kind"] in CRD_MODELS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, err.path))}: {err.message}")


@pytest.mark.parametrize("name", OVERLAYS)
def test_prometheus_operator_objects_validate_against_their_crd_schema(rendered, name):
    monitors = [o for o in rendered[name] if o["apiVersion"] == "monitoring.coreos.com/v1"]
    assert sorted(o["kind"] for o in monitors) == ["PodMonitor", "ServiceMonitor"]
    for obj in monitors:
        check_crd_object(obj)


@pytest.mark.parametrize("breakage", ["wrong type", "unknown field", "missing required field"])
def test_the_validator_rejects_a_broken_manifest(cpu, breakage):
    deployment = copy.deepcopy(find(cpu, "Deployment", "triton"))
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)  # the unbroken one passes
    triton = container(deployment)
    if breakage == "wrong type":
        triton["ports"][0]["containerPort"] = "eight thousand"
    elif breakage == "unknown field":
        triton["readinessProbe"]["httpGet"]["paht"] = triton["readinessProbe"]["httpGet"].pop("path")
    else:
        del deployment["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("breakage", ["bad interval", "unknown field"])
def test_the_crd_check_rejects_a_broken_monitor(cpu, breakage):
    monitor = copy.deepcopy(find(cpu, "ServiceMonitor", "triton"))
    check_crd_object(monitor)
    endpoint = monitor["spec"]["endpoints"][0]
    if breakage == "bad interval":
        endpoint["interval"] = "15 seconds"
    else:
        endpoint["prot"] = endpoint.pop("port")
    with pytest.raises((pydantic.ValidationError, AssertionError), match="pattern|does not know"):
        check_crd_object(monitor)


# -- CPU and GPU ----------------------------------------------------------------------------------


def test_gpu_differs_from_cpu_only_in_tritons_args_gpu_limit_and_toleration(rendered):
    cpu_objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered["cpu"]}
    gpu_objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered["gpu"]}
    assert set(cpu_objects) == set(gpu_objects)
    differences = {key + path for key in cpu_objects for path in diff_paths(cpu_objects[key], gpu_objects[key])}
    pod = ("Deployment", "triton", "spec", "template", "spec")
    assert differences == {
        pod + ("containers", 0, "args"),
        pod + ("containers", 0, "resources", "limits", "nvidia.com/gpu"),
        pod + ("tolerations",),
    }
    cpu_triton, gpu_triton = (find(rendered[n], "Deployment", "triton") for n in OVERLAYS)
    assert container(gpu_triton)["args"] == container(cpu_triton)["args"] + ["--model-config-name=gpu"]
    assert container(gpu_triton)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec(gpu_triton)["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_gpu_node_selector_component_adds_only_the_node_selector(rendered, tmp_path):
    selected = overlay(tmp_path, components=["monitoring", "gpu", "gpu-node-selector"])
    before, after = find(rendered["gpu"], "Deployment", "triton"), find(selected, "Deployment", "triton")
    assert diff_paths(before, after) == {("spec", "template", "spec", "nodeSelector")}
    assert pod_spec(after)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    kubernetes_validate.validate(after, KUBERNETES_VERSION, strict=True)


def test_without_the_monitoring_component_nothing_needs_the_operator_or_adapter(tmp_path):
    objects = overlay(tmp_path, components=["gpu"])
    assert not [o for o in objects if o["apiVersion"] == "monitoring.coreos.com/v1"]
    assert not of_kind(objects, "HorizontalPodAutoscaler")
    assert container(find(objects, "Deployment", "triton"))["args"][-1] == "--model-config-name=gpu"


# -- Triton ---------------------------------------------------------------------------------------


def dockerfile_instruction(path: Path, instruction: str) -> str:
    lines = [line for line in path.read_text().splitlines() if line.startswith(instruction + " ")]
    return lines[-1][len(instruction) + 1:].strip()


def test_triton_runs_the_image_as_the_dockerfile_and_compose_do(cpu, rendered):
    triton = find(cpu, "Deployment", "triton")
    cmd = json.loads(dockerfile_instruction(ROOT / "Dockerfile", "CMD"))
    assert container(triton)["command"] + container(triton)["args"] == cmd
    gpu_compose = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    gpu_triton = find(rendered["gpu"], "Deployment", "triton")
    assert container(gpu_triton)["command"] + container(gpu_triton)["args"] == gpu_compose["services"]["triton"]["command"]
    exposed = sorted(int(p) for p in dockerfile_instruction(ROOT / "Dockerfile", "EXPOSE").split())
    assert sorted(container_ports(triton).values()) == exposed == [8000, 8001, 8002]


@pytest.mark.parametrize("deployment, dockerfile", [("triton", "Dockerfile"), ("streamer", "docker/client.Dockerfile")])
def test_pods_run_as_the_images_non_root_user(cpu, deployment, dockerfile):
    uid, gid = (int(x) for x in dockerfile_instruction(ROOT / dockerfile, "USER").split(":"))
    spec = pod_spec(find(cpu, "Deployment", deployment))
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"] + spec.get("initContainers", []):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert "memory" in c["resources"]["limits"] and {"cpu", "memory"} <= set(c["resources"]["requests"])


def test_images_are_the_ones_this_repository_builds(rendered):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    expected = {"triton": f"{compose['triton']['image']}:latest", "streamer": f"{compose['streamer']['image']}:latest"}
    assert expected == {"triton": "triton-fasterrcnn:latest", "streamer": "streamer-client:latest"}
    for objects in rendered.values():
        for name, image in expected.items():
            spec = pod_spec(find(objects, "Deployment", name))
            assert {c["image"] for c in spec["containers"] + spec.get("initContainers", [])} == {image}


def test_triton_probes_use_the_health_endpoints_on_its_http_port(cpu):
    triton = find(cpu, "Deployment", "triton")
    c = container(triton)
    ports = container_ports(triton)
    paths = {probe: c[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live",
                     "readinessProbe": "/v2/health/ready"}
    for probe in paths:
        assert ports[c[probe]["httpGet"]["port"]] == 8000
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model load (and warm-up) needs minutes on a CPU"
    # The autoscaler or `kubectl scale` owns the count: a fixed one would be reset by every apply.
    assert "replicas" not in triton["spec"]


def test_services_reach_tritons_ports(cpu):
    triton = find(cpu, "Deployment", "triton")
    ports = container_ports(triton)
    headless, service = find(cpu, "Service", "triton-headless"), find(cpu, "Service", "triton")
    for svc in (headless, service):
        assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(triton))
        assert not selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(find(cpu, "Deployment", "streamer")))
        for port in svc["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], port
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses"), "only ready servers may be handed to the client"
    assert headless["spec"]["ipFamilyPolicy"] == "SingleStack", "each pod once, not once per IP family"
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]
    assert sorted(p["name"] for p in service["spec"]["ports"]) == ["grpc", "http", "metrics"]
    assert service["spec"].get("clusterIP") != "None"


# -- the streamer ---------------------------------------------------------------------------------


def test_streamer_watches_the_camera_file_through_the_headless_service(cpu):
    streamer = find(cpu, "Deployment", "streamer")
    c = container(streamer, "streamer")
    args = c["args"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    camera_map = find(cpu, "ConfigMap", "streamer-cameras")
    assert args[0] == "watch"
    assert args[1] in {f"{mounts['cameras']}/{key}" for key in camera_map["data"]}
    target = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", option(args, "--triton"))
    assert target, option(args, "--triton")
    service = find(cpu, "Service", target.group(1))
    assert service["spec"]["clusterIP"] == "None"
    port = next(p for p in service["spec"]["ports"] if p["port"] == int(target.group(2)))
    assert container_ports(find(cpu, "Deployment", "triton"))[port["targetPort"]] == 8001
    assert int(option(args, "--metrics-port")) == container_ports(streamer)["metrics"] == 9108
    assert option(args, "--metrics-host") == "0.0.0.0"
    # the live page only on the pod's loopback: kubectl port-forward reaches it, the network does not
    assert option(args, "--web") == "127.0.0.1:8090"
    assert 8090 not in {p["containerPort"] for p in c.get("ports", [])}


def test_streamer_waits_for_a_ready_triton_through_the_http_service(cpu):
    init = pod_spec(find(cpu, "Deployment", "streamer"))["initContainers"]
    assert [i["name"] for i in init] == ["wait-for-triton"]
    url = re.search(r"http://([a-z0-9-]+):(\d+)/v2/health/ready", init[0]["command"][-1])
    service = find(cpu, "Service", url.group(1))
    assert int(url.group(2)) in {p["port"] for p in service["spec"]["ports"] if p["targetPort"] == "http"}


def test_streamer_is_one_pod_replaced_not_rolled(cpu):
    spec = find(cpu, "Deployment", "streamer")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_streamer_pod_uses_objects_that_exist(cpu):
    streamer = find(cpu, "Deployment", "streamer")
    spec = pod_spec(streamer)
    names = {(o["kind"], o["metadata"]["name"]) for o in cpu}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert ("ConfigMap", volumes["cameras"]["configMap"]["name"]) in names
    assert ("PersistentVolumeClaim", volumes["recordings"]["persistentVolumeClaim"]["claimName"]) in names
    c = container(streamer, "streamer")
    assert [("Secret", e["secretRef"]["name"]) in names for e in c["envFrom"]] == [True]
    assert {m["name"] for m in c["volumeMounts"]} <= set(volumes)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")} == {"/recordings", "/tmp"}


def camera_text(objects: list) -> str:
    return next(iter(find(objects, "ConfigMap", "streamer-cameras")["data"].values()))


def camera_file(objects: list) -> dict:
    return yaml.safe_load(camera_text(objects))


def test_deployment_args_parse_as_streamer_watch_options(cpu):
    """The real `watch` command's parser (no run), --triton's dns:/// form included."""
    from streamer.cli import watch

    args = list(container(find(cpu, "Deployment", "streamer"), "streamer")["args"])
    assert args[0] == "watch"
    params = watch.make_context("watch", args[1:]).params
    assert params["cameras"] == ("/config/cameras.yaml",)
    [target] = params["triton"]  # parsed once, into a typed target
    assert (target.text, target.dns, params["metrics_port"], params["metrics_host"]) == (
        "dns:///triton-headless:8001", True, 9108, "0.0.0.0")
    assert params["web_bind"] == "127.0.0.1:8090"
    assert not params["show"] and not params["overwrite"]


def test_camera_file_loads_with_credentials_from_the_secret_and_records_on_the_volume(cpu, tmp_path):
    """The ConfigMap's camera file through streamer's own loader, with the pod's environment."""
    from streamer.settings import SettingsError, load_camera_file

    streamer = find(cpu, "Deployment", "streamer")
    text = camera_text(cpu)
    assert text.count("${") == len(VARIABLE.findall(text)), "a malformed ${...}"
    secret = {k: base64.b64decode(v).decode() for k, v in find(cpu, "Secret", "streamer-credentials")["data"].items()}
    environment = dict(secret, STARTED_AT="20260101T000000Z")  # STARTED_AT: set by the container's command
    assert set(VARIABLE.findall(text)) == set(environment), "every ${VAR} defined, every credential used"
    path = tmp_path / "config" / "cameras.yaml"
    path.parent.mkdir()
    path.write_text(text)
    loaded = load_camera_file(path, env=environment)
    assert (loaded.triton, loaded.metrics_port, loaded.metrics_host) == (None, None, None), "the Deployment's flags"
    recordings = next(m["mountPath"] for m in container(streamer, "streamer")["volumeMounts"] if m["name"] == "recordings")
    outputs = []
    for camera in loaded.cameras:
        assert any(value in camera.source for value in secret.values())
        for output in (camera.record, camera.detections):
            assert output.parent == Path(recordings) and "20260101T000000Z" in output.name, output
            outputs.append(output)
    assert len(outputs) == len(set(outputs)) == 2 * len(loaded.cameras)
    without = {k: v for k, v in environment.items() if k != "FRONT_PASSWORD"}
    with pytest.raises(SettingsError, match="FRONT_PASSWORD"):
        load_camera_file(path, env=without)


def test_container_command_exports_started_at_and_execs_streamer_with_the_args(cpu, tmp_path):
    c = container(find(cpu, "Deployment", "streamer"), "streamer")
    fake = tmp_path / "streamer"
    fake.write_text('#!/bin/sh\necho "pid=$$"\necho "started=$STARTED_AT"\nfor a in "$@"; do echo "arg=$a"; done\n')
    fake.chmod(0o755)
    proc = subprocess.Popen(c["command"] + c["args"], stdout=subprocess.PIPE, text=True,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = out.splitlines()
    assert lines[0] == f"pid={proc.pid}", "exec: streamer is the container's PID 1 and gets SIGTERM itself"
    assert re.fullmatch(r"started=\d{8}T\d{6}Z", lines[1])
    assert [line[len("arg="):] for line in lines[2:]] == c["args"]


def test_a_site_overlay_replaces_cameras_credentials_and_images(tmp_path):
    """docs/kubernetes.md's my-site/kustomization.yaml (the page's own text: the test below)."""
    cameras = "cameras:\n  gate:\n    source: rtsp://admin:${GATE_PASSWORD}@10.0.0.9/live\n" \
              "    record: /recordings/gate-${STARTED_AT}.mp4\n"
    registry = "registry.example.com/vision"
    objects = overlay(tmp_path, resource="overlays/gpu", files={"cameras.yaml": cameras, "site.env": "GATE_PASSWORD=s3cret\n"},
                      extra={
        "configMapGenerator": [{"name": "streamer-cameras", "behavior": "replace", "files": ["cameras.yaml"]}],
        "secretGenerator": [{"name": "streamer-credentials", "behavior": "replace", "envs": ["site.env"]}],
        "images": [{"name": "triton-fasterrcnn", "newName": f"{registry}/triton-fasterrcnn", "newTag": "1.2"},
                   {"name": "streamer-client", "newName": f"{registry}/streamer-client", "newTag": "1.2"}],
    })
    assert list(camera_file(objects)["cameras"]) == ["gate"]
    secret = find(objects, "Secret", "streamer-credentials")
    assert secret["data"] == {"GATE_PASSWORD": base64.b64encode(b"s3cret").decode()}
    spec = pod_spec(find(objects, "Deployment", "streamer"))
    assert spec["containers"][0]["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    assert next(v for v in spec["volumes"] if v["name"] == "cameras")["configMap"]["name"] == \
        find(objects, "ConfigMap", "streamer-cameras")["metadata"]["name"]
    assert container(find(objects, "Deployment", "triton"))["image"] == f"{registry}/triton-fasterrcnn:1.2"
    assert {c["image"] for c in spec["containers"] + spec["initContainers"]} == {f"{registry}/streamer-client:1.2"}



def test_the_site_overlay_of_docs_kubernetes_renders_as_written(tmp_path):
    """The my-site/kustomization.yaml of docs/kubernetes.md, verbatim, beside a checkout named
    `streamer` (its `../streamer/deploy/...` path), with a camera file and credentials of its own."""
    page = (ROOT / "docs" / "kubernetes.md").read_text()
    example = re.search(r"```yaml\n# my-site/kustomization\.yaml[^\n]*\n(.*?)```", page, re.S)
    assert example, "docs/kubernetes.md lost its my-site/kustomization.yaml example"
    (tmp_path / "streamer").symlink_to(ROOT, target_is_directory=True)
    site = tmp_path / "my-site"
    site.mkdir()
    (site / "kustomization.yaml").write_text(example.group(1))
    (site / "cameras.yaml").write_text("cameras:\n  gate:\n    source: rtsp://admin:${GATE_PASSWORD}@10.0.0.9/live\n")
    (site / "credentials.env").write_text("GATE_PASSWORD=s3cret\n")
    objects = render(site)
    assert list(camera_file(objects)["cameras"]) == ["gate"]
    assert find(objects, "Secret", "streamer-credentials")["data"] == {"GATE_PASSWORD": base64.b64encode(b"s3cret").decode()}
    registry = "registry.example.com/vision"
    assert container(find(objects, "Deployment", "triton"))["image"] == f"{registry}/triton-fasterrcnn:1.0"
    spec = pod_spec(find(objects, "Deployment", "streamer"))
    assert {c["image"] for c in spec["containers"] + spec["initContainers"]} == {f"{registry}/streamer-client:1.0"}
    assert "--model-config-name=gpu" in container(find(objects, "Deployment", "triton"))["args"], "overlays/gpu"

# -- network policy -------------------------------------------------------------------------------


def allowed(objects: list, source_namespace: str, source_labels: dict, target_labels: dict, port: int) -> bool:
    """NetworkPolicy ingress semantics for a TCP connection into the streamer namespace."""
    policies = [p for p in of_kind(objects, "NetworkPolicy") if selects(p["spec"]["podSelector"], target_labels)
                and "Ingress" in p["spec"]["policyTypes"]]
    if not policies:
        return True
    namespace_labels = {"kubernetes.io/metadata.name": source_namespace}
    for rule in (r for p in policies for r in p["spec"].get("ingress", [])):
        if rule.get("ports") and port not in [p["port"] for p in rule["ports"] if p.get("protocol", "TCP") == "TCP"]:
            continue
        for peer in rule.get("from") or [{}]:
            in_namespace = (selects(peer["namespaceSelector"], namespace_labels) if "namespaceSelector" in peer
                            else "podSelector" not in peer or source_namespace == "streamer")
            if in_namespace and ("podSelector" not in peer or selects(peer["podSelector"], source_labels)):
                return True
    return False


def test_only_streamer_pods_reach_tritons_inference_ports_and_monitoring_reaches_metrics(cpu):
    triton = pod_labels(find(cpu, "Deployment", "triton"))
    streamer = pod_labels(find(cpu, "Deployment", "streamer"))
    other = {"app.kubernetes.io/name": "something-else"}
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    for port in (8000, 8001):
        assert allowed(cpu, "streamer", streamer, triton, port)
        assert not allowed(cpu, "streamer", other, triton, port)
        assert not allowed(cpu, "elsewhere", streamer, triton, port), "a streamer label in another namespace"
        assert not allowed(cpu, "monitoring", prometheus, triton, port)
    assert allowed(cpu, "monitoring", prometheus, triton, 8002)
    assert not allowed(cpu, "streamer", other, triton, 8002)
    assert allowed(cpu, "monitoring", prometheus, streamer, 9108)
    assert not allowed(cpu, "streamer", other, streamer, 9108)
    assert not allowed(cpu, "elsewhere", other, streamer, 9108)
    # The metrics ports the policies open are the ones the pods serve metrics on.
    assert container_ports(find(cpu, "Deployment", "triton"))["metrics"] == 8002
    assert container_ports(find(cpu, "Deployment", "streamer"))["metrics"] == 9108


# -- monitoring and autoscaling -------------------------------------------------------------------


def test_service_monitor_scrapes_tritons_metrics_port_once(cpu):
    monitor = find(cpu, "ServiceMonitor", "triton")
    services = [s for s in of_kind(cpu, "Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == ["triton"], "the headless Service would scrape every pod twice"
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert "namespaceSelector" not in monitor["spec"]


def test_pod_monitor_scrapes_the_streamers_metrics_port(cpu):
    monitor = find(cpu, "PodMonitor", "streamer")
    deployments = [d for d in of_kind(cpu, "Deployment") if selects(monitor["spec"]["selector"], pod_labels(d))]
    assert [d["metadata"]["name"] for d in deployments] == ["streamer"]
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= set(container_ports(deployments[0]))


def test_autoscaler_scales_triton_on_the_adapters_queue_time_metric(cpu):
    hpa = find(cpu, "HorizontalPodAutoscaler", "triton")
    target = hpa["spec"]["scaleTargetRef"]
    assert find(cpu, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    assert target["name"] == "triton"
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] in {r["name"]["as"] for r in rules}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_adapter_rule_maps_tritons_series_to_pods():
    rule = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"][0]
    assert rule["name"]["as"] == "avg_time_queue_us"
    assert re.fullmatch(rule["name"]["matches"], "nv_inference_queue_duration_us")
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    query = rule["metricsQuery"]
    for needed in ("nv_inference_queue_duration_us{<<.LabelMatchers>>}", "nv_inference_request_success{<<.LabelMatchers>>}",
                   "by (<<.GroupBy>>)"):
        assert needed in query
