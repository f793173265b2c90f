"""The optional dashboard component: locked down like the workers, credentials only
from a Secret, read-only one variable away, and an image that can run it."""

from __future__ import annotations

from tests.deploy.support import K8S, Doc, image_extras, one, overlay, render, validate


def container(docs: list[Doc]) -> Doc:
    pod = one(docs, "Deployment", "dashboard")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"]
    (found,) = pod["containers"]
    return dict(found)


def test_dev_overlay_serves_the_dashboard_locked_down() -> None:
    docs = overlay("dev")
    for kind in ("Deployment", "Service"):
        validate(one(docs, kind, "dashboard"))
    dashboard = container(docs)
    assert dashboard["args"][0] == "dashboard"
    security = dashboard["securityContext"]
    assert security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert dashboard[probe]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in dashboard["env"]}
    assert env["LEVERET_DASHBOARD_READ_ONLY"]["value"] == "false"
    token = env["LEVERET_DASHBOARD_TOKEN"]
    assert "value" not in token  # never defaulted in the manifest
    ref = token["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional", False)
    one(docs, "Secret", ref["name"])  # dev generates it; production creates it
    service = one(docs, "Service", "dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "dashboard"


def test_component_is_optional_and_renders_on_its_own_overlay() -> None:
    assert not [d for d in overlay("prod") if d["metadata"]["name"] == "dashboard"]
    base = render(K8S / "base")
    assert not [d for d in base if d["metadata"]["name"] == "dashboard"]


def test_image_carries_the_dashboard_extra() -> None:
    assert "dashboard" in image_extras()
