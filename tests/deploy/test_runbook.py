"""The runbook's commands and paths are the ones that exist."""

from __future__ import annotations

import re
import shlex

from tests.deploy import contract
from tests.deploy.support import DEPLOY, K8S, load_all_yaml, overlay, render
from tests.support import ROOT

RUNBOOK = DEPLOY / "README.md"


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), re.S)


def leveret_commands() -> list[list[str]]:
    """Every `leveret ...` invocation in the runbook's shell blocks, as argv after `leveret`."""
    found = []
    for block in shell_blocks():
        lexer = shlex.shlex(block.replace("\\\n", " "), posix=True, punctuation_chars=";|&\n")
        lexer.whitespace = " \t\r"
        command: list[str] = []
        for word in [*lexer, "\n"]:
            if word.strip(" ") and word not in (";", "|", "&&", "||", "&", "\n"):
                command.append(word)
                continue
            starts = [
                i
                for i, w in enumerate(command)
                if w == "leveret" and (i == 0 or command[i - 1] == "--")
            ]
            found += [command[i + 1 :] for i in starts]
            command = []
    return found


def test_leveret_commands_in_the_runbook_parse() -> None:
    commands = leveret_commands()
    assert any(c[:2] == ["dlq", "replay"] for c in commands)
    for argv in commands:
        contract.parse_command(argv)


def test_paths_in_the_runbook_exist() -> None:
    text = RUNBOOK.read_text()
    repo_path = r"\b((?:deploy/(?:k8s|compose|Dockerfile|README)|tests/deploy)[\w./-]*\w)"
    for path in set(re.findall(repo_path, text)):
        assert (ROOT / path).exists(), f"deploy/README.md names {path}, which does not exist"
    for path in set(re.findall(r"`(k8s/[\w./<>-]*\w)`", text)):
        if "<" not in path:
            assert (DEPLOY / path).exists(), path


def test_kubectl_apply_targets_render() -> None:
    targets = set(re.findall(r"kubectl (?:apply|kustomize) -k (\S+)", RUNBOOK.read_text()))
    targets |= set(re.findall(r"kubectl kustomize (\S+)", RUNBOOK.read_text()))
    assert targets
    for target in targets:
        assert render(ROOT / target)


def test_dlq_job_runs_a_leveret_command_as_the_workers_do() -> None:
    (job,) = load_all_yaml(K8S / "jobs" / "dlq.yaml")
    spec = job["spec"]["template"]["spec"]
    (worker,) = spec["containers"]
    env = {v["name"]: v.get("value") for v in worker["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: str(env[m.group(1)]), a) for a in worker["args"]]
    contract.parse_command(args)
    deployment = next(
        d for d in render(K8S / "overlays" / "prod") if d["metadata"]["name"] == "worker-emails"
    )
    template = deployment["spec"]["template"]["spec"]
    (running,) = template["containers"]
    assert spec["securityContext"] == template["securityContext"]
    assert worker["securityContext"] == running["securityContext"]
    assert worker["envFrom"] == running["envFrom"]
    same = {v["name"]: v for v in running["env"]}
    for var in worker["env"]:
        if var["name"] != "DLQ_QUEUE":
            assert same[var["name"]] == var, var["name"]
    assert spec["serviceAccountName"] == template["serviceAccountName"]


def test_the_restart_after_a_config_change_reaches_every_deployment_that_reads_it() -> None:
    """The runbook restarts by label after a ConfigMap change: every Deployment that
    reads the ConfigMap, in every overlay (optional components included), has it."""
    command = re.search(r"rollout restart deployment -l (\S+?)=(\S+?)`", RUNBOOK.read_text())
    assert command, "the runbook no longer says how to restart after a ConfigMap change"
    key, value = command.groups()
    readers = 0
    for name in ("dev", "prod", "prod-hpa"):
        for doc in overlay(name):
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            sources = [
                e["configMapRef"]["name"]
                for c in [*pod.get("initContainers", []), *pod["containers"]]
                for e in c.get("envFrom", [])
                if "configMapRef" in e
            ]
            if "leveret-worker-config" in sources:
                readers += 1
                labels = doc["metadata"].get("labels", {})
                assert labels.get(key) == value, f"{name}: {doc['metadata']['name']} {labels}"
    assert readers
