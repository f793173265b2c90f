"""Rendering and reading the manifests in deploy/, offline."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv

from tests.support import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

OVERLAYS = ("dev", "prod", "prod-hpa")
# Oldest Kubernetes the manifests support (deploy/README.md), and the newest whose
# schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", kv.latest_version())

Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: it renders the kustomize overlays offline")
    return path


@functools.cache
def _render(directory: str) -> tuple[str, ...]:
    done = subprocess.run(
        [kubectl(), "kustomize", directory],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return tuple(json.dumps(d) for d in yaml.safe_load_all(done.stdout) if d)


def render(directory: Path) -> list[Doc]:
    """`kubectl kustomize DIR`, as fresh dicts (callers may change them)."""
    return [json.loads(d) for d in _render(str(directory))]


def overlay(name: str) -> list[Doc]:
    return render(K8S / "overlays" / name)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# -- workers -------------------------------------------------------------------------


def workers(docs: list[Doc]) -> list[Doc]:
    """The worker Deployments (one per worker group)."""
    return [
        d
        for d in of_kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "worker"
    ]


def container(deployment: Doc, name: str = "worker") -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def config_map(docs: list[Doc], name: str) -> dict[str, str]:
    data: dict[str, str] = one(docs, "ConfigMap", name)["data"]
    return data


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def environment(docs: list[Doc], pod_spec: Doc, name: str = "worker") -> dict[str, str | None]:
    """A container's environment as the kubelet builds it.

    envFrom first, then env (which overrides), with $(VAR) references expanded from
    the variables defined before. Values from Secrets are None (not in the manifests)
    and references to them stay as written.
    """
    spec = next(c for c in pod_spec["containers"] if c["name"] == name)
    env: dict[str, str | None] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            for key, value in config_map(docs, source["configMapRef"]["name"]).items():
                env[source.get("prefix", "") + key] = value
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = _REFERENCE.sub(
                lambda m: env.get(m.group(1)) or m.group(0), var["value"]
            )
        else:
            env[var["name"]] = None
    return env


def secret_refs(pod_spec: Doc) -> Iterator[tuple[str, str, bool]]:
    """(secret name, key, optional) of every secretKeyRef in the pod's containers."""
    for spec in pod_spec["containers"]:
        for var in spec.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield ref["name"], ref["key"], bool(ref.get("optional", False))


def permission_of(docs: list[Doc], user: str) -> Doc:
    """The Permission (Messaging Topology Operator) granted to a User resource."""
    found = [p for p in of_kind(docs, "Permission") if p["spec"]["userReference"]["name"] == user]
    assert len(found) == 1, f"expected one Permission for {user}, found {len(found)}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def budgets_of(docs: list[Doc], deployment: Doc) -> list[Doc]:
    """The PodDisruptionBudgets whose selector takes the deployment's pods."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return [
        p
        for p in of_kind(docs, "PodDisruptionBudget")
        if matches(p["spec"]["selector"]["matchLabels"], labels)
    ]


# -- image -----------------------------------------------------------------------------


def image_extras() -> frozenset[str]:
    """The extras deploy/Dockerfile installs the project with (``pip install "/src[...]"``)."""
    found = re.findall(r'pip install "/src\[([\w,-]+)\]"', (DEPLOY / "Dockerfile").read_text())
    assert len(found) == 1, "deploy/Dockerfile installs the project once, with its extras"
    return frozenset(found[0].split(","))


# -- schemas ---------------------------------------------------------------------------


def validate_core(doc: Doc, version: str) -> None:
    """Validate a built-in kind against the schemas kubernetes-validate ships (strict)."""
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise AssertionError(
            f"{kv.kn(doc)} against Kubernetes {version}: {where}: {exc.message}"
        ) from None


def validate(doc: Doc) -> None:
    """Validate any object: built-in kinds for each supported Kubernetes, others by CRD."""
    try:
        kv.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    except kv.SchemaNotFoundError:
        validate_custom(doc)
        return
    except kv.ValidationError:
        pass
    for version in KUBERNETES_VERSIONS:
        validate_core(doc, version)


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    group, _, version = api_version.rpartition("/")
    path = SCHEMAS / f"{group}_{kind}_{version}.json"
    assert path.exists(), f"no schema for {kind} ({api_version}) in {SCHEMAS}"
    return _strict(json.loads(path.read_text()))


def validate_custom(doc: Doc) -> None:
    """Validate a custom resource against its operator's CRD schema (vendored, trimmed)."""
    schema = crd_schema(doc["apiVersion"], doc["kind"])
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
    )
    assert not errors, f"{kv.kn(doc)}: " + "; ".join(
        f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in errors
    )


def _strict(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema, refusing unknown fields.

    The API server prunes unknown fields silently; refusing them here catches a typo
    (``cooldownPeriods``) that would otherwise be dropped without a word.
    """
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and "properties" in out and not preserve:
        out.setdefault("additionalProperties", False)
    # The root's metadata is the API server's to check; it is a plain object here.
    return out
