"""Static checks of the deployment files (no container engine runs here): they parse, run as
non-root, probe gRPC health, bound their resources, and only set settings that exist."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from nba_service.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"
REPO = DEPLOY.parents[1]
SETTINGS = {f"NBA_{name.upper()}" for name in Settings.model_fields}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def k8s() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    steps = dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) >= 2 and all(" AS " in f.upper() for f in froms)
    for f in froms:
        image = f.split()[0]
        assert ":" in image and not image.endswith(":latest"), f"pin the base image: {image}"
    final = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    users = [args for op, args in steps[final:] if op == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) >= 1000)
    stage_names = {f.split()[-1] for f in froms[:-1]}
    copies_from = re.findall(r"--from=(\S+)", " ".join(a for op, a in steps[final:]
                                                       if op == "COPY"))
    assert copies_from and set(copies_from) <= stage_names


def test_dockerfile_hygiene() -> None:
    steps = dockerfile()
    ops = [op for op, _ in steps]
    assert "ADD" not in ops, "COPY local files; ADD fetches URLs and unpacks archives"
    assert "MAINTAINER" not in ops
    for op, args in steps:
        if op == "RUN" and "apt-get install" in args:
            assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists" in args
        if op == "RUN" and "pip install" in args:
            env = " ".join(a for o, a in steps if o == "ENV")
            assert "--no-cache-dir" in args or "PIP_NO_CACHE_DIR=1" in env
        if op == "RUN":
            assert "sudo " not in args and "curl | sh" not in args.replace("  ", " ")
    entry = [a for op, a in steps if op in ("ENTRYPOINT", "CMD")]
    assert entry and all(e.startswith("[") and json.loads(e) for e in entry), (
        "exec form, so the server is PID 1 and receives SIGTERM")
    assert "HEALTHCHECK" in ops
    exposed = {p for op, a in steps if op == "EXPOSE" for p in a.split()}
    env = {k: v for op, a in steps if op == "ENV"
           for k, _, v in (tok.partition("=") for tok in shlex.split(a))}
    assert {env["NBA_PORT"], env["NBA_HTTP_PORT"]} <= exposed
    assert env["NBA_HOST"] == "0.0.0.0"
    assert {k for k in env if k.startswith("NBA_")} <= SETTINGS
    for op, args in steps:
        if op == "COPY" and "--from" not in args:
            for src in shlex.split(args)[:-1]:
                if not src.startswith("--"):
                    assert (REPO / src).exists(), f"COPY source {src} does not exist"


def test_compose_has_the_service_and_its_store() -> None:
    doc = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = doc["services"]
    assert {"nba", "valkey"} <= set(services)
    nba = services["nba"]
    assert nba["depends_on"]["valkey"]["condition"] == "service_healthy"
    assert "healthcheck" in services["valkey"]
    env = nba["environment"]
    assert env["NBA_REDIS_URL"].startswith("redis://valkey:")
    assert set(env) <= SETTINGS
    build = nba["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for name, svc in services.items():
        limits = svc["deploy"]["resources"]["limits"]
        assert limits["memory"] and limits["cpus"], name
        assert svc.get("user", "10001") not in ("root", "0")
    for port in nba["ports"]:
        assert port.startswith("127.0.0.1:"), "publish on loopback unless told otherwise"


def test_kubernetes_deployment() -> None:
    docs = k8s()
    dep = docs["Deployment"]
    spec = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] >= 1000
    (c,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env_names = {e["name"] for e in c["env"]}
    probes = [c[p] for p in ("readinessProbe", "livenessProbe", "startupProbe")]
    if "NBA_TLS_CERT" in env_names:
        # The kubelet's gRPC probe speaks plaintext only: against a TLS port it never passes.
        assert not any("grpc" in p for p in probes)
    ready = c["readinessProbe"]
    if "grpc" in ready:
        assert ready["grpc"]["port"] == ports["grpc"]
        assert ready["grpc"]["service"] == "nba.v1.Decisioning"
    else:  # the HTTP port's mirror of the gRPC health status
        assert ready["httpGet"] == {"port": "http", "path": "/healthz"}
    for p in probes:
        for kind in ("grpc", "httpGet", "tcpSocket"):
            if kind in p:
                port = p[kind]["port"]
                assert port in ports or port in ports.values(), p
    res = c["resources"]
    for kind in ("requests", "limits"):
        assert res[kind]["cpu"] and res[kind]["memory"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in c["env"]}
    assert set(env) <= SETTINGS, set(env) - SETTINGS
    assert "value" not in env["NBA_REDIS_PASSWORD"], "secrets come from Secrets"
    drain = float(env["NBA_DRAIN_S"]["value"])
    grace = float(env["NBA_SHUTDOWN_GRACE_S"]["value"])
    assert spec["terminationGracePeriodSeconds"] > drain + grace
    mounts = {m["name"] for m in c["volumeMounts"]}
    assert mounts == {v["name"] for v in spec["volumes"]}


@pytest.mark.parametrize("kind", ["PodDisruptionBudget", "Service"])
def test_pdb_and_service_select_the_deployment(kind: str) -> None:
    docs = k8s()
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    doc = docs[kind]
    selector = doc["spec"]["selector"]
    selector = selector.get("matchLabels", selector)
    assert selector.items() <= labels.items()
    if kind == "PodDisruptionBudget":
        assert doc["apiVersion"] == "policy/v1"
        assert "maxUnavailable" in doc["spec"] or "minAvailable" in doc["spec"]
        assert docs["Deployment"]["spec"]["replicas"] >= 2
    else:
        ports = {p["name"] for p in doc["spec"]["ports"]}
        assert ports == {"grpc", "http"}
