"""The objects KubernetesBackend creates, checked against the official Kubernetes 1.37 schemas
(kubernetes-validate, strict: no unknown fields) and rule by rule against the Pod Security
Standards: every ``baseline`` and ``restricted`` control, as the namespace enforces them."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from executions.backends.kubernetes.manifests import (
    COMPONENT_LABEL,
    CONFIGMAP_BUDGET,
    HANDLE_LABEL,
    JOB_LABEL,
    MANAGED_BY_LABEL,
    KubernetesOptions,
    Part,
    configmap_for,
    job_for,
    part_for,
    resource_name,
)
from sandbox.contract import CompileStep, Session
from sandbox.policy import Limits, SandboxPolicy
from tests.sandbox.conformance import COMMAND

from .kube_helpers import parse_stream

KUBERNETES_VERSION = "1.37.0"
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "platform-rbac.yaml"
TOLERATIONS = (
    {"key": "evalplatform.io/sandbox", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "gpu", "operator": "Equal", "value": "none", "effect": "NoExecute"},
)
# Stands in for the supervisor: the manifests only carry it.
SUPERVISOR = b"\x7fELF" + bytes(80_000)


def session_for(**overrides: Any) -> Session:
    policy = overrides.pop("policy", None) or SandboxPolicy(
        limits=Limits(wall_time_ms=2500, memory_mb=256, output_bytes=64 * 1024, cpus=0.5)
    )
    compile_command = overrides.pop("compile_command", ())
    return Session(
        execution_id=overrides.pop("execution_id", 12),
        handle=overrides.pop("handle", "evalplatform-12-3"),
        image="registry.example/evalplatform/python:3.11",
        command=COMMAND,
        files=overrides.pop("files", {"main.py": b"print(input())\n", "lib/util.py": b"\xff\x00"}),
        policy=policy,
        stdins=overrides.pop("stdins", [b"42\n", b"", b"\x00\xff"]),
        labels={"evalplatform.evaluation": "5", "not a label key!": "dropped"},
        compile=CompileStep(
            compile_command,
            Limits(wall_time_ms=10_000, memory_mb=512, output_bytes=32 * 1024, cpus=1),
        )
        if compile_command
        else None,
    )


def whole(session: Session) -> Part:
    return part_for(session, 0, supervisor_size=len(SUPERVISOR))


CASES: dict[str, tuple[Part, KubernetesOptions]] = {
    "defaults": (whole(session_for()), KubernetesOptions()),
    "compiles": (whole(session_for(compile_command=("javac", "Main.java"))), KubernetesOptions()),
    "gvisor-dedicated-nodes": (
        whole(session_for()),
        KubernetesOptions(
            namespace="sandboxes",
            runtime_class="gvisor",
            node_selector={"evalplatform.io/sandbox": "true"},
            tolerations=TOLERATIONS,
            image_pull_secrets=("registry-credentials",),
            pending_timeout_s=120,
            ttl_seconds_after_finished=0,
        ),
    ),
    "policy-runtime-class-and-network": (
        whole(
            session_for(
                policy=SandboxPolicy(
                    limits=Limits(
                        wall_time_ms=60_000, memory_mb=2048, output_bytes=4 << 20, cpus=2
                    ),
                    network=True,
                    runtime_class="kata",
                )
            )
        ),
        KubernetesOptions(runtime_class="gvisor"),
    ),
    "odd-handle": (
        whole(session_for(handle="Evaluation_12/Run#3" + "x" * 80, execution_id=2**40)),
        KubernetesOptions(),
    ),
    "a later part": (
        part_for(session_for(compile_command=("make",)), 2, supervisor_size=len(SUPERVISOR)),
        KubernetesOptions(),
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[Part, KubernetesOptions]:
    return CASES[request.param]


@pytest.fixture
def job(case: tuple[Part, KubernetesOptions]) -> dict[str, Any]:
    return job_for(*case)


@pytest.fixture
def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])
    yield from spec.get("ephemeralContainers", [])


# --- schemas -----------------------------------------------------------------------------------


def test_job_matches_the_official_schema(job: dict[str, Any]) -> None:
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_pod_template_is_a_valid_pod(job: dict[str, Any]) -> None:
    template = job["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        **template,
        "metadata": {"name": "p", **template["metadata"]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_configmap_matches_the_official_schema(case: tuple[Part, KubernetesOptions]) -> None:
    part, options = case
    configmap = configmap_for(part, options.namespace, supervisor_binary=SUPERVISOR)
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    decoded = {key: base64.b64decode(value) for key, value in configmap["binaryData"].items()}
    streams = {"stream": part.stream()}
    compile_stream = part.compile_stream()
    if compile_stream is not None:
        streams["compile-stream"] = compile_stream
    files = part.session.files
    assert decoded == {
        "supervisor": SUPERVISOR,
        **{f"f{index}": files[name] for index, name in enumerate(sorted(files))},
        **streams,
    }
    assert configmap["immutable"] is True, "a running pod's code cannot be changed under it"


def test_schema_validation_can_fail(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def configmap_size(part: Part) -> int:
    configmap = configmap_for(part, "sandbox", supervisor_binary=SUPERVISOR)
    return sum(len(value) for value in configmap["binaryData"].values())


def test_a_part_takes_as_many_cases_as_fit_in_one_configmap() -> None:
    session = session_for(stdins=[bytes([48 + i]) * 200_000 for i in range(7)])
    first = whole(session)
    assert 0 < first.end < 7
    assert configmap_size(first) <= CONFIGMAP_BUDGET
    with pytest.raises(ValueError, match=r"take \d+ bytes in base64"):
        configmap_size(replace(first, end=first.end + 1))
    rest = part_for(session, first.end, supervisor_size=len(SUPERVISOR))
    assert rest.first == first.end and configmap_size(rest) <= CONFIGMAP_BUDGET
    assert whole(session_for()).end == 3, "a usual session is one part"


@pytest.mark.parametrize(
    "extra",
    [{}, {"compile_command": ("make", "x" * 50_000)}, {"files": {"main.py": b"#" * 200_000}}],
    ids=["cases only", "a compile step", "more code"],
)
def test_the_budget_counts_everything_the_configmap_holds(extra: dict[str, Any]) -> None:
    session = session_for(stdins=[b"x" * 150_000] * 6, **extra)
    first = whole(session)
    assert configmap_size(first) <= CONFIGMAP_BUDGET
    with pytest.raises(ValueError, match=r"take \d+ bytes in base64"):
        configmap_size(replace(first, end=first.end + 1))


def test_a_case_whose_input_alone_does_not_fit_is_refused() -> None:
    session = session_for(stdins=[b"small", b"y" * 800_000])
    assert whole(session).end == 1
    with pytest.raises(ValueError, match="the input of case 1 take"):
        part_for(session, 1, supervisor_size=len(SUPERVISOR))


def test_names_and_labels_are_valid(
    case: tuple[Part, KubernetesOptions], job: dict[str, Any]
) -> None:
    part, options = case
    name = job["metadata"]["name"]
    handle = part.session.handle
    assert name == resource_name(handle if part.first == 0 else f"{handle}-{part.first}")
    assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert job["metadata"]["namespace"] == options.namespace
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[MANAGED_BY_LABEL] == "evalplatform"
        assert labels[COMPONENT_LABEL] == "sandbox"  # what the deny-all NetworkPolicy selects
        assert labels[HANDLE_LABEL] == resource_name(handle), "cancel finds every part by it"
        assert labels[JOB_LABEL] == name
        assert "not a label key!" not in labels


def test_distinct_handles_get_distinct_names() -> None:
    long = "evalplatform-" + "9" * 70
    assert resource_name(long + "-0") != resource_name(long + "-1")
    assert resource_name("A_b") != resource_name("a-b")


# --- the policy table of DESIGN.md -------------------------------------------------------------


def test_job_runs_once_within_deadlines(
    case: tuple[Part, KubernetesOptions], job: dict[str, Any]
) -> None:
    part, options = case
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["completions"] == 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["ttlSecondsAfterFinished"] == options.ttl_seconds_after_finished
    steps = [*([part.compile] if part.compile else []), *part.cases]
    running_s = sum(step.limits.wall_time_ms / 1000 + options.grace_s for step in steps)
    assert spec["activeDeadlineSeconds"] == -(-running_s // 1) + options.pending_timeout_s


def test_no_service_account_token_and_no_service_links(pod_spec: dict[str, Any]) -> None:
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["serviceAccountName"] == KubernetesOptions().service_account


def test_requests_equal_limits(pod_spec: dict[str, Any]) -> None:
    for container in all_containers(pod_spec):
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], container["name"]
        assert set(resources["limits"]) == {"cpu", "memory", "ephemeral-storage"}


def test_the_containers_limits_come_from_the_policy(
    case: tuple[Part, KubernetesOptions], pod_spec: dict[str, Any]
) -> None:
    part, _ = case
    limits = part.session.limits
    (cases,) = pod_spec["containers"]
    resources = cases["resources"]["limits"]
    build_mb = part.compile.limits.scratch_mb if part.compile else 0
    # The largest case's memory, the supervisor's own and its buffers for one step's output.
    expected_mb = limits.memory_mb + 8 + -(-2 * limits.output_bytes // 2**20) + build_mb
    assert resources["memory"] == f"{expected_mb}Mi"
    assert resources["cpu"] == f"{round(limits.cpus * 1000)}m"
    log_bytes = len(part.cases) * (512 + 2 * limits.output_bytes + 1) + 8 * 2**20
    assert resources["ephemeral-storage"] == f"{-(-log_bytes // 2**20)}Mi"
    scratch = next(v for v in pod_spec["volumes"] if v["name"] == "scratch")["emptyDir"]
    assert scratch == {"medium": "Memory", "sizeLimit": f"{limits.scratch_mb}Mi"}
    if part.compile is not None:
        (compiler,) = pod_spec["initContainers"]
        compile_limits = part.compile.limits
        assert compiler["resources"]["limits"]["memory"] == (
            f"{compile_limits.memory_mb + 8 + -(-2 * compile_limits.output_bytes // 2**20)}Mi"
        )
        build = next(v for v in pod_spec["volumes"] if v["name"] == "build")["emptyDir"]
        assert build == {"medium": "Memory", "sizeLimit": f"{compile_limits.scratch_mb}Mi"}


def test_the_supervisor_is_pid_1_and_code_and_input_are_read_only_mounts(
    case: tuple[Part, KubernetesOptions], pod_spec: dict[str, Any]
) -> None:
    part, _ = case
    session = part.session
    for container in all_containers(pod_spec):
        assert container["image"] == session.image
        # No shell: the supervisor itself, on its stream; the catalogue's command is in it.
        assert container["command"] == ["/sandbox/bin/supervisor", "/sandbox/input/stream"]
        assert "args" not in container
        assert container["env"] == [
            {"name": k, "value": v} for k, v in session.policy.environment.items()
        ]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for path in ("/sandbox/bin", "/sandbox/input", "/sandbox/code"):
            assert mounts[path]["readOnly"] is True, (container["name"], path)
        assert not mounts["/tmp"].get("readOnly")
    (cases,) = pod_spec["containers"]
    code = next(m for m in cases["volumeMounts"] if m["mountPath"] == "/sandbox/code")
    assert code["name"] == ("build" if part.compile else "code")
    assert code["readOnly"] is True, "what the compile step made is read-only to every case"
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    assert volumes["supervisor"]["configMap"]["defaultMode"] == 0o555
    assert volumes["code"]["configMap"]["defaultMode"] == 0o444
    if part.compile is not None:
        (compiler,) = pod_spec["initContainers"]
        assert compiler["name"] == "compile"
        mounts = {m["mountPath"]: m for m in compiler["volumeMounts"]}
        assert mounts["/sandbox/build"] == {"name": "build", "mountPath": "/sandbox/build"}
        assert mounts["/sandbox/input"]["name"] == "compile-stream"
    else:
        assert "initContainers" not in pod_spec


def test_the_streams_hold_the_steps_of_the_part_only(case: tuple[Part, KubernetesOptions]) -> None:
    part, _ = case
    stream = parse_stream(part.stream())
    assert (stream.nonce, stream.archive) == (part.nonce, b""), "the code is mounted"
    assert [(step.kind, step.index, step.stdin) for step in stream.steps] == [
        ("C", index, part.session.stdins[index]) for index in range(part.first, part.end)
    ]
    compile_stream = part.compile_stream()
    if compile_stream is not None:
        parsed = parse_stream(compile_stream)
        assert parsed.nonce == part.compile_nonce != part.nonce
        assert [(step.kind, step.index, step.stdin) for step in parsed.steps] == [("K", 0, b"")]


def test_cluster_options_are_applied(
    case: tuple[Part, KubernetesOptions], pod_spec: dict[str, Any]
) -> None:
    part, options = case
    expected_runtime = part.session.policy.runtime_class or options.runtime_class
    assert pod_spec.get("runtimeClassName", "") == expected_runtime
    assert pod_spec.get("nodeSelector", {}) == dict(options.node_selector)
    assert pod_spec.get("tolerations", []) == [dict(t) for t in options.tolerations]
    assert pod_spec.get("imagePullSecrets", []) == [
        {"name": name} for name in options.image_pull_secrets
    ]


# --- Pod Security Standards, one test per control -----------------------------------------------
# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline, restricted)

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
    "image",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _contexts(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield spec.get("securityContext") or {}
    for container in all_containers(spec):
        yield container.get("securityContext") or {}


def _handlers(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in container:
            yield container[probe]
    yield from (container.get("lifecycle") or {}).values()


def baseline_host_process(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return not any((ctx.get("windowsOptions") or {}).get("hostProcess") for ctx in _contexts(spec))


def baseline_host_namespaces(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return not any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))


def baseline_privileged(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return not any(ctx.get("privileged") for ctx in _contexts(spec))


def baseline_capabilities(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    added = {
        cap
        for c in all_containers(spec)
        for cap in ((c.get("securityContext") or {}).get("capabilities") or {}).get("add", [])
    }
    return added <= BASELINE_CAPABILITIES


def baseline_host_path_volumes(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return not any("hostPath" in volume for volume in spec.get("volumes", []))


def baseline_host_ports(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return not any(
        port.get("hostPort", 0) for c in all_containers(spec) for port in c.get("ports", [])
    )


def baseline_host_probes_and_hooks(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return not any(
        (handler.get(kind) or {}).get("host")
        for c in all_containers(spec)
        for handler in _handlers(c)
        for kind in ("httpGet", "tcpSocket")
    )


def baseline_apparmor(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    profiles = [(ctx.get("appArmorProfile") or {}).get("type") for ctx in _contexts(spec)]
    legacy = [
        value
        for key, value in annotations.items()
        if key.startswith("container.apparmor.security.beta.kubernetes.io/")
    ]
    return "Unconfined" not in profiles and "unconfined" not in legacy


def baseline_selinux(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    for ctx in _contexts(spec):
        options = ctx.get("seLinuxOptions") or {}
        if (
            options.get("type", "") not in SELINUX_TYPES
            or options.get("user")
            or options.get("role")
        ):
            return False
    return True


def baseline_proc_mount(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return all(ctx.get("procMount", "Default") == "Default" for ctx in _contexts(spec))


def baseline_seccomp(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return all(
        (ctx.get("seccompProfile") or {}).get("type") != "Unconfined" for ctx in _contexts(spec)
    )


def baseline_sysctls(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    sysctls = (spec.get("securityContext") or {}).get("sysctls", [])
    return all(sysctl["name"] in SAFE_SYSCTLS for sysctl in sysctls)


def restricted_volume_types(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return all(set(volume) - {"name"} <= ALLOWED_VOLUME_TYPES for volume in spec.get("volumes", []))


def restricted_privilege_escalation(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return all(
        (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is False
        for c in all_containers(spec)
    )


def restricted_run_as_non_root(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    pod = (spec.get("securityContext") or {}).get("runAsNonRoot")
    for c in all_containers(spec):
        own = (c.get("securityContext") or {}).get("runAsNonRoot")
        if own is False or (own is None and pod is not True):
            return False
    return True


def restricted_run_as_user(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    return all(ctx.get("runAsUser", 1) != 0 for ctx in _contexts(spec))


def restricted_seccomp(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    allowed = {"RuntimeDefault", "Localhost"}
    pod = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    for c in all_containers(spec):
        own = ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        if own is not None and own not in allowed:
            return False
        if own is None and pod not in allowed:
            return False
    return True


def restricted_capabilities(spec: dict[str, Any], annotations: dict[str, str]) -> bool:
    for c in all_containers(spec):
        capabilities = (c.get("securityContext") or {}).get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            return False
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            return False
    return True


Rule = Callable[[dict[str, Any], dict[str, str]], bool]
RULES: dict[str, Rule] = {
    "baseline: no HostProcess": baseline_host_process,
    "baseline: no host namespaces": baseline_host_namespaces,
    "baseline: not privileged": baseline_privileged,
    "baseline: capabilities from the default set only": baseline_capabilities,
    "baseline: no hostPath volumes": baseline_host_path_volumes,
    "baseline: no host ports": baseline_host_ports,
    "baseline: no host in probes or lifecycle hooks": baseline_host_probes_and_hooks,
    "baseline: AppArmor not unconfined": baseline_apparmor,
    "baseline: SELinux type allowed, no custom user or role": baseline_selinux,
    "baseline: default /proc mount": baseline_proc_mount,
    "baseline: seccomp not unconfined": baseline_seccomp,
    "baseline: safe sysctls only": baseline_sysctls,
    "restricted: allowed volume types only": restricted_volume_types,
    "restricted: no privilege escalation": restricted_privilege_escalation,
    "restricted: runs as non-root": restricted_run_as_non_root,
    "restricted: runAsUser is not 0": restricted_run_as_user,
    "restricted: seccomp RuntimeDefault or Localhost": restricted_seccomp,
    "restricted: drops ALL capabilities, adds only NET_BIND_SERVICE": restricted_capabilities,
}

# A pod that breaks each rule: proof that each check can fail.
VIOLATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "baseline: no HostProcess": lambda s: s["securityContext"].update(
        windowsOptions={"hostProcess": True}
    ),
    "baseline: no host namespaces": lambda s: s.update(hostPID=True),
    "baseline: not privileged": lambda s: s["containers"][0]["securityContext"].update(
        privileged=True
    ),
    "baseline: capabilities from the default set only": lambda s: s["containers"][0][
        "securityContext"
    ]["capabilities"].update(add=["SYS_ADMIN"]),
    "baseline: no hostPath volumes": lambda s: s["volumes"].append(
        {"name": "root", "hostPath": {"path": "/"}}
    ),
    "baseline: no host ports": lambda s: s["containers"][0].update(
        ports=[{"containerPort": 80, "hostPort": 80}]
    ),
    "baseline: no host in probes or lifecycle hooks": lambda s: s["containers"][0].update(
        livenessProbe={"httpGet": {"host": "169.254.169.254", "port": 80}}
    ),
    "baseline: AppArmor not unconfined": lambda s: s["securityContext"].update(
        appArmorProfile={"type": "Unconfined"}
    ),
    "baseline: SELinux type allowed, no custom user or role": lambda s: s["securityContext"].update(
        seLinuxOptions={"type": "spc_t"}
    ),
    "baseline: default /proc mount": lambda s: s["initContainers"][0]["securityContext"].update(
        procMount="Unmasked"
    ),
    "baseline: seccomp not unconfined": lambda s: s["initContainers"][0]["securityContext"].update(
        seccompProfile={"type": "Unconfined"}
    ),
    "baseline: safe sysctls only": lambda s: s["securityContext"].update(
        sysctls=[{"name": "kernel.msgmax", "value": "1"}]
    ),
    "restricted: allowed volume types only": lambda s: s["volumes"].append(
        {"name": "nfs", "nfs": {"server": "x", "path": "/"}}
    ),
    "restricted: no privilege escalation": lambda s: s["initContainers"][0]["securityContext"].pop(
        "allowPrivilegeEscalation"
    ),
    "restricted: runs as non-root": lambda s: s["initContainers"][0]["securityContext"].update(
        runAsNonRoot=False
    ),
    "restricted: runAsUser is not 0": lambda s: s["containers"][0]["securityContext"].update(
        runAsUser=0
    ),
    "restricted: seccomp RuntimeDefault or Localhost": lambda s: s["containers"][0][
        "securityContext"
    ].update(seccompProfile={"type": "Unconfined"}),
    "restricted: drops ALL capabilities, adds only NET_BIND_SERVICE": lambda s: s["initContainers"][
        0
    ]["securityContext"].update(capabilities={"drop": ["NET_RAW"]}),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_pod_security_standard(rule: str, job: dict[str, Any]) -> None:
    template = job["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    assert RULES[rule](template["spec"], annotations), f"the sandbox pod breaks {rule!r}"


@pytest.mark.parametrize("rule", sorted(RULES))
def test_pod_security_check_catches_a_violation(rule: str) -> None:
    # A pod with both containers, so that each rule can be broken in either.
    part = whole(session_for(compile_command=("make",)))
    spec = job_for(part, KubernetesOptions())["spec"]["template"]["spec"]
    VIOLATIONS[rule](spec)
    assert not RULES[rule](spec, {})


def test_every_rule_has_a_violation() -> None:
    assert set(VIOLATIONS) == set(RULES)


def test_network_widening_is_left_to_the_network_policy() -> None:
    # A runtime with network on gets the same pod: egress is the NetworkPolicy's decision.
    limits = Limits(wall_time_ms=1000, memory_mb=64, output_bytes=10)
    open_net = whole(session_for(policy=SandboxPolicy(limits=limits, network=True)))
    closed = replace(open_net, session=session_for(policy=SandboxPolicy(limits=limits)))
    assert job_for(open_net, KubernetesOptions()) == job_for(closed, KubernetesOptions())


# --- what the Role allows ----------------------------------------------------------------------


def role_rules() -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]
    (role,) = [doc for doc in documents if doc["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "evalplatform-sandbox"
    return list(role["rules"])


def allowed(group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in role_rules()
    )


def test_the_job_references_only_what_the_sandbox_namespace_holds(
    case: tuple[Part, KubernetesOptions], pod_spec: dict[str, Any]
) -> None:
    """The pod mounts only its own ConfigMap and emptyDirs: no Secret, no PVC, no projected
    token, so the platform never needs more than the Role's resources to run it."""
    part, options = case
    for volume in pod_spec["volumes"]:
        kinds = set(volume) - {"name"}
        assert kinds <= {"configMap", "emptyDir"}, volume
        if "configMap" in volume:
            assert volume["configMap"]["name"] == part.name
    secrets = [s["name"] for s in pod_spec.get("imagePullSecrets", [])]
    assert secrets == list(options.image_pull_secrets), "only the operator's pull secrets"
    for container in all_containers(pod_spec):
        assert "envFrom" not in container
        assert all("valueFrom" not in env for env in container.get("env", []))


def test_role_allows_every_resource_the_backend_creates() -> None:
    assert allowed("batch", "jobs", "create") and allowed("batch", "jobs", "delete")
    assert allowed("", "configmaps", "create") and allowed("", "configmaps", "patch")
    assert allowed("", "pods", "watch") and allowed("", "pods/log", "get")
    assert not allowed("", "secrets", "get"), "the Role must not reach Secrets"
    assert not allowed("", "pods/exec", "create")


def test_the_client_sends_exactly_the_validated_objects(
    case: tuple[Part, KubernetesOptions],
) -> None:
    """The backend passes its dicts through the client's models; nothing may be dropped or
    renamed on the way (a field the models did not know would vanish silently)."""
    from kubernetes.client import ApiClient, V1ConfigMap, V1Job

    part, options = case
    job = job_for(part, options)
    configmap = configmap_for(part, options.namespace, supervisor_binary=SUPERVISOR)
    serialize = ApiClient().sanitize_for_serialization
    assert serialize(V1Job.from_dict(job)) == job
    assert serialize(V1ConfigMap.from_dict(configmap)) == configmap
