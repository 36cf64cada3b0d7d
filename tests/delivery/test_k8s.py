"""deploy/k8s: every overlay renders with `kubectl kustomize` and every object validates
(kubernetes-validate --strict) for a named Kubernetes version; and what the manifests promise
(probes, threads = CPU limit, hardening, a grace period that fits the shutdown) holds."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.metrics import Metrics
from service.settings import Settings
from service.shutdown import FRESH_CONNECTION_WAIT_S, REFUSE_S
from tests.delivery.test_delivery import final_stage, find_tool, one

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The version the manifests are validated for (the oldest they are meant to run on).
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ["cpu", "gpu", "keda"]
# Custom resources kubernetes-validate has no schema for. The KEDA CRD's schema is not
# available offline, so ScaledObjects are checked field by field in test_keda_overlay.
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}

Manifest = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    kubectl = find_tool("kubectl")
    run = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / request.param)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return request.param, [d for d in yaml.safe_load_all(run.stdout) if d]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def the(objects: list[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(deployment: Manifest, name: str = "api") -> Manifest:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def config(objects: list[Manifest]) -> dict[str, str]:
    return dict(the(objects, "ConfigMap")["data"])


def test_every_object_validates_strictly(rendered: tuple[str, list[Manifest]]) -> None:
    _, objects = rendered
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        # Raises ValidationError (unknown fields included, with strict) on a bad object.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_wrong_field(rendered: tuple[str, list[Manifest]]) -> None:
    _, objects = rendered
    broken = copy.deepcopy(the(objects, "Deployment"))
    container(broken)["livenessProbe"]["httpGett"] = {"path": "/health/live", "port": 8000}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_objects_fit_together(rendered: tuple[str, list[Manifest]]) -> None:
    overlay, objects = rendered
    deployment = the(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = the(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert the(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= (
        pod_labels.items()
    )
    policy = the(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == [8000]
    # Egress goes to DNS and Redis, never back to pods selected as these.
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            selected = peer.get("podSelector", {}).get("matchLabels", {})
            assert selected and not selected.items() <= pod_labels.items(), rule
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {"nmt"}
    names = {o["metadata"]["name"] for o in objects}
    spec = deployment["spec"]["template"]["spec"]
    refs = [e["configMapRef"]["name"] for e in container(deployment)["envFrom"]]
    refs += [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v]
    assert set(refs) <= names, "the Deployment refers to an object the overlay lacks"
    autoscalers = of_kind(objects, "HorizontalPodAutoscaler") + of_kind(objects, "ScaledObject")
    assert len(autoscalers) == 1, "one autoscaler per Deployment"
    assert autoscalers[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (overlay == "keda") == (autoscalers[0]["kind"] == "ScaledObject")


def test_config_map_holds_valid_settings(rendered: tuple[str, list[Manifest]]) -> None:
    _, objects = rendered
    data = config(objects)
    fields = {f"NMT_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields, f"not settings: {sorted(set(data) - fields)}"
    # The keys file exists only in the pod; everything else must parse as the service would.
    values = {k.removeprefix("NMT_").lower(): v for k, v in data.items() if v}
    values.pop("api_keys_file")
    Settings(**values)
    deployment = the(objects, "Deployment")
    mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert str(Path(data["NMT_API_KEYS_FILE"]).parent) in mounts


def test_deployment_probes_resources_and_hardening(rendered: tuple[str, list[Manifest]]) -> None:
    overlay, objects = rendered
    deployment = the(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    api = container(deployment)
    assert api["startupProbe"]["httpGet"]["path"] == "/health/ready"
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "room for an export"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # NMT_THREADS is the container's own CPU limit, in whole cores.
    threads = next(e for e in api["env"] if e["name"] == "NMT_THREADS")["valueFrom"]
    assert threads["resourceFieldRef"] == {
        "containerName": "api",
        "resource": "limits.cpu",
        "divisor": "1",
    }
    limits, requests = api["resources"]["limits"], api["resources"]["requests"]
    assert str(limits["cpu"]).isdigit(), "a whole number of cores, so threads = the limit"
    assert requests["cpu"] == limits["cpu"], "guaranteed CPU: the threads get their cores"
    assert "memory" in limits
    # Non-root as the image's user, read-only root, nothing to escalate.
    user = one(final_stage(REPO / ("Dockerfile.gpu" if overlay == "gpu" else "Dockerfile")), "USER")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    for c in pod["containers"] + pod.get("initContainers", []):
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"]: m["name"] for m in api["volumeMounts"] if not m.get("readOnly")}
    assert "emptyDir" in volumes[writable["/app/artifacts"]]
    assert "emptyDir" in volumes[writable["/tmp"]]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }


def test_grace_period_fits_the_graceful_shutdown(rendered: tuple[str, list[Manifest]]) -> None:
    _, objects = rendered
    deployment = the(objects, "Deployment")
    data = config(objects)
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = float(data["NMT_SHUTDOWN_GRACE_S"])
    deadline = float(data.get("NMT_REQUEST_TIMEOUT_S", Settings().request_timeout_s))
    assert grace > 0 and pre_stop > 0
    # preStop, the grace window, the 503 window, fresh connections' wait, then requests
    # still in flight run to their deadline.
    needed = pre_stop + grace + REFUSE_S + FRESH_CONNECTION_WAIT_S + deadline
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed


def test_gpu_overlay(rendered: tuple[str, list[Manifest]]) -> None:
    overlay, objects = rendered
    api = container(the(objects, "Deployment"))
    gpus = api["resources"]["limits"].get("nvidia.com/gpu")
    if overlay != "gpu":
        assert gpus is None and api["image"].endswith(":cpu")
        return
    assert str(gpus) == "1" and api["image"].endswith(":gpu")
    assert config(objects)["NMT_DEVICE"] == "cuda"


def test_keda_overlay(rendered: tuple[str, list[Manifest]]) -> None:
    overlay, objects = rendered
    if overlay != "keda":
        assert not of_kind(objects, "ScaledObject")
        return
    scaled = the(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(scaled["spec"]) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "triggers",
        "advanced",
        "fallback",
        "idleReplicaCount",
    }
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    query = triggers["prometheus"]["metadata"]["query"]
    # The metric the trigger reads is one the service exports.
    assert "nmt_queue_depth" in query
    assert b"# TYPE nmt_queue_depth gauge" in Metrics().render()
    assert float(triggers["prometheus"]["metadata"]["threshold"]) > 0
    assert not of_kind(objects, "HorizontalPodAutoscaler"), "KEDA makes its own HPA"
