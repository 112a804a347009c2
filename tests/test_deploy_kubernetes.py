"""The Kubernetes manifests in deploy/kubernetes: valid against the official schemas, and
holding the properties its README promises (restricted Pod Security, least-privilege RBAC,
no network for sandboxes, no host access, secrets only from Secrets, real setting names)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from executions.conf import DEFAULTS
from sandbox.supervisor import SUPERVISOR_MEMORY_BYTES
from tests.conftest import require_real

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
KUBERNETES_VERSION = "1.37.0"

PLATFORM_NAMESPACE = "evalplatform"
SANDBOX_NAMESPACE = "evalplatform-sandbox"
PLATFORM_SERVICE_ACCOUNT = "evalplatform"
SANDBOX_SERVICE_ACCOUNT = "evalplatform-sandbox"
PLATFORM_IMAGE = "evalplatform/platform"
SANDBOX_LABEL = {"app.kubernetes.io/component": "sandbox"}

# Agreed with the Kubernetes backend (executions/backends/kubernetes/manifests.py).
KUBERNETES_SETTINGS = frozenset(
    {
        "EXECUTION_KUBERNETES_NAMESPACE",
        "EXECUTION_KUBERNETES_SERVICE_ACCOUNT",
        "EXECUTION_KUBERNETES_RUNTIME_CLASS",
        "EXECUTION_KUBERNETES_NODE_SELECTOR",
        "EXECUTION_KUBERNETES_TOLERATIONS",
        "EXECUTION_KUBERNETES_IMAGE_PULL_SECRETS",
        "EXECUTION_KUBERNETES_PENDING_TIMEOUT_S",
        "EXECUTION_KUBERNETES_TTL_S",
        "EXECUTION_KUBERNETES_MAX_CONCURRENT",
    }
)
# What the backend does in the sandbox namespace, and nothing more.
SANDBOX_PERMISSIONS = frozenset(
    [("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")]
    + [("", "pods", verb) for verb in ("get", "list", "watch")]
    + [("", "pods/log", "get")]
    + [("", "configmaps", verb) for verb in ("create", "get", "list", "delete", "patch")]
)
# Values that must come from a Secret, never from a manifest or a ConfigMap.
SENSITIVE = frozenset(
    {
        "SECRET_KEY",
        "DATABASE_URL",
        "ADMIN_PASSWORD",
        "EXECUTION_SERVICE_SECRET",
        "POSTGRES_PASSWORD",
    }
)
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"})


def manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path != KUSTOMIZATION)


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@functools.cache
def documents() -> tuple[dict[str, Any], ...]:
    """Every object in every manifest, the templates (``*.example.yaml``) included."""
    return tuple(doc for path in manifest_files() for doc in load(path))


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "Pod":
        return dict(workload["spec"])
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(workload["spec"]["template"]["spec"])


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] in WORKLOAD_KINDS]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def platform_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for every container that runs the platform's image."""
    for workload in workloads():
        spec = pod_spec(workload)
        for container in containers(spec):
            if container["image"].split(":")[0] == PLATFORM_IMAGE:
                yield spec, container


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) in a parsed document, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def quantity(value: str | int) -> Decimal:
    """A Kubernetes quantity ("100m", "2Gi", "4") as a number."""
    suffixes = {"m": Decimal("0.001")} | {
        suffix: Decimal(1024**power) for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti"), 1)
    }
    text = str(value)
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * factor
    return Decimal(text)


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load(KUSTOMIZATION.read_text()))


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path.name} holds no object"
    problems = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            # The exception's own text holds the whole schema: keep the path and the reason.
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc.message}")
    assert problems == []


def test_kustomization_lists_every_manifest_except_the_templates() -> None:
    config = kustomization()
    listed = config["resources"]
    assert len(listed) == len(set(listed))
    templates = {path.name for path in manifest_files() if path.name.endswith(".example.yaml")}
    assert templates == {"secret.example.yaml", "ingress.example.yaml"}
    assert set(listed) == {path.name for path in manifest_files()} - templates
    # The images transformer rewrites the image the platform's containers really use.
    assert [image["name"] for image in config["images"]] == [PLATFORM_IMAGE]
    assert list(platform_containers())


@pytest.mark.real_service
def test_kustomize_builds_every_listed_object() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        require_real("kubectl", "not installed; its built-in kustomize builds the manifests")
    built = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    rendered = [doc for doc in yaml.safe_load_all(built.stdout) if doc is not None]
    expected = [doc for name in kustomization()["resources"] for doc in load(MANIFESTS / name)]

    def key(doc: dict[str, Any]) -> tuple[str, str, str]:
        return (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])

    assert sorted(map(key, rendered)) == sorted(map(key, expected))


@pytest.mark.parametrize("namespace", [SANDBOX_NAMESPACE, PLATFORM_NAMESPACE])
def test_namespace_enforces_the_restricted_pod_security_standard(namespace: str) -> None:
    labels = named("Namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_every_namespaced_object_is_in_one_of_the_two_namespaces() -> None:
    for doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") in {PLATFORM_NAMESPACE, SANDBOX_NAMESPACE}, (
                f"{doc['kind']}/{doc['metadata']['name']}"
            )


def test_the_role_grants_only_what_the_backend_needs() -> None:
    (role,) = objects("Role")
    assert role["metadata"]["namespace"] == SANDBOX_NAMESPACE
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    assert granted == SANDBOX_PERMISSIONS
    assert not {resource for _, resource, _ in granted} & {"secrets", "pods/exec", "pods/attach"}


def test_no_cluster_scoped_permissions_anywhere() -> None:
    kinds = {doc["kind"] for doc in documents()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for binding in objects("RoleBinding"):
        assert binding["metadata"]["namespace"] == SANDBOX_NAMESPACE
        assert binding["roleRef"]["kind"] == "Role"


def test_the_role_binding_binds_only_the_platform_service_account() -> None:
    (binding,) = objects("RoleBinding")
    (role,) = objects("Role")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": PLATFORM_SERVICE_ACCOUNT,
            "namespace": PLATFORM_NAMESPACE,
        }
    ]
    account = named("ServiceAccount", PLATFORM_SERVICE_ACCOUNT)
    assert account["metadata"]["namespace"] == PLATFORM_NAMESPACE


def test_sandbox_pods_get_no_network() -> None:
    policies = [
        policy
        for policy in objects("NetworkPolicy")
        if policy["metadata"]["namespace"] == SANDBOX_NAMESPACE
    ]
    sandbox_policies = [
        policy
        for policy in policies
        if policy["spec"]["podSelector"] == {"matchLabels": SANDBOX_LABEL}
        and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ]
    assert sandbox_policies, "no NetworkPolicy selects the sandbox pods for ingress and egress"
    # Policies only add allowances: a single rule in this namespace would open a path.
    for policy in policies:
        assert not policy["spec"].get("ingress"), policy["metadata"]["name"]
        assert not policy["spec"].get("egress"), policy["metadata"]["name"]


def test_sandbox_service_account_has_no_token_and_no_bindings() -> None:
    account = named("ServiceAccount", SANDBOX_SERVICE_ACCOUNT)
    assert account["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert account["automountServiceAccountToken"] is False
    for binding in objects("RoleBinding"):
        for subject in binding["subjects"]:
            assert subject["name"] != SANDBOX_SERVICE_ACCOUNT


def test_sandbox_namespace_bounds_each_sandbox_and_all_of_them() -> None:
    (limit_range,) = [
        doc for doc in objects("LimitRange") if doc["metadata"]["namespace"] == SANDBOX_NAMESPACE
    ]
    (container,) = [item for item in limit_range["spec"]["limits"] if item["type"] == "Container"]
    resources = {"cpu", "memory", "ephemeral-storage"}
    for bound in ("default", "defaultRequest", "max"):
        assert set(container[bound]) == resources, bound
        for resource in resources:
            assert quantity(container[bound][resource]) <= quantity(container["max"][resource])
    # A session at the platform's own memory and output caps must fit in one sandbox
    # container, with the supervisor beside the program.
    hard_max_memory = DEFAULTS["HARD_MAX_MEMORY_MB"] * 2**20
    supervisor_needs = SUPERVISOR_MEMORY_BYTES + 2 * DEFAULTS["HARD_MAX_OUTPUT_KB"] * 1024
    assert quantity(container["max"]["memory"]) >= hard_max_memory + supervisor_needs

    (quota,) = [
        doc for doc in objects("ResourceQuota") if doc["metadata"]["namespace"] == SANDBOX_NAMESPACE
    ]
    hard = quota["spec"]["hard"]
    assert {
        "pods",
        "count/jobs.batch",
        "configmaps",
        "requests.cpu",
        "limits.cpu",
        "requests.memory",
        "limits.memory",
        "limits.ephemeral-storage",
    } <= set(hard)
    assert quantity(hard["limits.memory"]) >= quantity(container["max"]["memory"])
    assert quantity(hard["limits.cpu"]) >= quantity(container["max"]["cpu"])
    # One ConfigMap per Job, plus the kube-root-ca.crt every namespace holds.
    assert quantity(hard["configmaps"]) >= quantity(hard["count/jobs.batch"]) + 1
    # Every worker process can have its sandbox running at once.
    worker = named("Deployment", "worker")
    config = named("ConfigMap", "evalplatform-config")["data"]
    assert quantity(hard["pods"]) >= worker["spec"]["replicas"] * int(config["Q_WORKERS"])


def test_no_manifest_reaches_the_host() -> None:
    for doc in documents():
        for path, value in walk(doc):
            key = path.rsplit(".", 1)[-1]
            assert key != "hostPath", path
            assert not (key in {"hostNetwork", "hostPID", "hostIPC", "hostUsers"} and value), path
            assert key != "hostPort", path
            assert not (isinstance(value, str) and "docker.sock" in value), path


def test_no_container_is_privileged() -> None:
    for doc in documents():
        for path, value in walk(doc):
            if path.endswith(".privileged"):
                assert value is False, f"{doc['metadata']['name']}: {path}"
            if path.endswith("capabilities.add"):
                pytest.fail(f"{doc['metadata']['name']}: {path} = {value}")


def test_every_container_is_hardened_and_bounded() -> None:
    assert workloads()
    for workload in workloads():
        spec = pod_spec(workload)
        pod_security = spec.get("securityContext", {})
        for container in containers(spec):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
            assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, where
            seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), where


def test_the_web_server_is_probed_on_its_health_endpoint() -> None:
    spec = pod_spec(named("Deployment", "web"))
    (web,) = spec["containers"]
    ports = {port["name"]: port["containerPort"] for port in web["ports"]}
    readiness = web["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert readiness["port"] in ports or readiness["port"] in ports.values()
    # Liveness asks only the process: a database outage must not restart the web pods.
    liveness = web["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert liveness["port"] in ports or liveness["port"] in ports.values()
    service = named("Service", "web")
    assert (
        service["spec"]["selector"].items()
        <= named("Deployment", "web")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)


def test_platform_commands_are_the_projects_own() -> None:
    web = pod_spec(named("Deployment", "web"))
    worker = pod_spec(named("Deployment", "worker"))
    assert web["containers"][0]["command"][:2] == ["gunicorn", "evalplatform.wsgi"]
    assert "gunicorn evalplatform.wsgi" in (REPO / "Dockerfile").read_text()
    # Threaded workers, as in the Dockerfile: a request waiting for its run (?wait=) would
    # outlive a sync worker's timeout.
    assert "--threads" in web["containers"][0]["command"]
    assert "--threads" in (REPO / "Dockerfile").read_text()
    (migrate,) = web["initContainers"]
    assert "manage.py migrate" in migrate["command"][-1]
    assert "manage.py bootstrap" in migrate["command"][-1]
    assert worker["containers"][0]["command"] == ["python", "manage.py", "qcluster"]


def test_only_the_platform_pods_hold_an_api_token() -> None:
    for workload in workloads():
        spec = pod_spec(workload)
        runs_platform = any(
            container["image"].split(":")[0] == PLATFORM_IMAGE for container in containers(spec)
        )
        name = workload["metadata"]["name"]
        if runs_platform:
            assert spec["serviceAccountName"] == PLATFORM_SERVICE_ACCOUNT, name
        else:
            assert spec.get("serviceAccountName", "default") != PLATFORM_SERVICE_ACCOUNT, name
            assert spec["automountServiceAccountToken"] is False, name
    assert named("ServiceAccount", PLATFORM_SERVICE_ACCOUNT)["automountServiceAccountToken"] is (
        False
    )


def test_secrets_come_only_from_secrets() -> None:
    for workload in workloads():
        spec = pod_spec(workload)
        secret_volumes = {
            volume["name"]: volume["secret"]
            for volume in spec.get("volumes", [])
            if "secret" in volume
        }
        for container in containers(spec):
            where = f"{workload['metadata']['name']}/{container['name']}"
            mounts = {
                mount["mountPath"]: secret_volumes[mount["name"]]
                for mount in container.get("volumeMounts", [])
                if mount["name"] in secret_volumes
            }
            for variable in container.get("env", []):
                name = variable["name"]
                if name in SENSITIVE:
                    assert "value" not in variable, f"{where}: {name} is a literal"
                    assert "secretKeyRef" in variable["valueFrom"], f"{where}: {name}"
                elif name.endswith("_FILE") and name.removesuffix("_FILE") in SENSITIVE:
                    directory, _, file_name = variable["value"].rpartition("/")
                    assert directory in mounts, f"{where}: {name} is not in a Secret volume"
                    keys = {item["path"] for item in mounts[directory].get("items", [])}
                    assert not keys or file_name in keys, f"{where}: {name}"
    for config_map in objects("ConfigMap"):
        for key in config_map.get("data", {}):
            assert key.removesuffix("_FILE") not in SENSITIVE, key


def test_the_secret_template_is_refused_until_edited() -> None:
    (secret,) = objects("Secret")
    assert "secret.example.yaml" not in kustomization()["resources"]
    values = secret["stringData"]
    assert all("REPLACE-ME" in value for value in values.values())
    # Left unchanged it cannot pass for a production key (settings.py wants 32 characters).
    assert len(values["secret-key"]) < 32
    used_keys = {
        item["key"]
        for workload in workloads()
        for volume in pod_spec(workload).get("volumes", [])
        if "secret" in volume
        for item in volume["secret"]["items"]
    }
    assert used_keys <= set(values)


def test_platform_environment_names_are_real_settings() -> None:
    sources = [REPO / "evalplatform" / "settings.py", REPO / "evalplatform" / "variables.py"]
    sources += (REPO / "executions" / "management" / "commands").glob("*.py")
    read = {
        name for path in sources for name in re.findall(r'"([A-Z][A-Z0-9_]*)"', path.read_text())
    }
    names = set()
    for _, container in platform_containers():
        names |= {variable["name"] for variable in container.get("env", [])}
        for source in container.get("envFrom", []):
            config_map = named("ConfigMap", source["configMapRef"]["name"])
            names |= set(config_map["data"])
    assert "EXECUTION_BACKEND" in names
    kubernetes = {name for name in names if name.startswith("EXECUTION_KUBERNETES_")}
    assert kubernetes <= KUBERNETES_SETTINGS
    # NAME_FILE is read by the settings' env() helper wherever NAME is.
    unread = sorted(name for name in names - kubernetes if name.removesuffix("_FILE") not in read)
    assert unread == []
    # The optional settings are commented out in config.yaml: their names must be right too.
    text = "".join(path.read_text() for path in manifest_files())
    assert set(re.findall(r"\bEXECUTION_KUBERNETES_[A-Z_]+", text)) == KUBERNETES_SETTINGS


def test_the_backend_is_pointed_at_the_sandbox_namespace() -> None:
    config = named("ConfigMap", "evalplatform-config")["data"]
    assert config["EXECUTION_BACKEND"] == "kubernetes"
    assert config["EXECUTION_KUBERNETES_NAMESPACE"] == SANDBOX_NAMESPACE
    assert config["EXECUTION_KUBERNETES_SERVICE_ACCOUNT"] == SANDBOX_SERVICE_ACCOUNT
    assert named("Namespace", SANDBOX_NAMESPACE)
    assert named("ServiceAccount", SANDBOX_SERVICE_ACCOUNT)


def test_platform_namespace_admits_traffic_only_where_it_is_served() -> None:
    policies = [
        policy
        for policy in objects("NetworkPolicy")
        if policy["metadata"]["namespace"] == PLATFORM_NAMESPACE
    ]
    assert any(
        policy["spec"]["podSelector"] == {}
        and policy["spec"]["policyTypes"] == ["Ingress"]
        and not policy["spec"].get("ingress")
        for policy in policies
    ), "no default deny of ingress in the platform namespace"
    platform_clients = {"web", "worker"}
    for policy in policies:
        selected = policy["spec"]["podSelector"].get("matchLabels", {})
        for rule in policy["spec"].get("ingress", []):
            if selected.get("app.kubernetes.io/component") == "web":
                continue
            # The database and the broker: only from the platform's own pods.
            (peer,) = rule["from"]
            expressions = {
                expression["key"]: set(expression["values"])
                for expression in peer["podSelector"]["matchExpressions"]
            }
            assert expressions["app.kubernetes.io/component"] <= platform_clients
            assert "namespaceSelector" not in peer
