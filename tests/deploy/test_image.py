"""The Dockerfile, read and partly rehearsed without a Docker engine.

The image cannot be built here, so its parts are checked one by one: what each stage
does, that the build context holds exactly what it copies, that the wheel built from
that context has the console script the image runs, and that the runtime layout
(the wheel plus /app/tasks on PYTHONPATH) loads the demo app through that script.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy import contract
from tests.deploy.support import DEPLOY, environment, overlay, workers
from tests.support import ROOT

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|[\w.+-]+-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined, ARG defaults substituted."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        if keyword == "FROM":
            resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            base, _, name = resolved.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(argument: str) -> list[str]:
    form = json.loads(argument)
    assert isinstance(form, list), f"use the exec (JSON) form, not {argument!r}"
    return [str(x) for x in form]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for argument in stage.all("ENV"):
        for item in shlex.split(argument):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from=)."""
    found = []
    for argument in stage.all("COPY"):
        words = [w for w in argument.split() if not w.startswith("--chown")]
        if words[0].startswith("--from"):
            continue
        found.append((words[:-1], words[-1]))
    return found


def stages() -> tuple[Stage, Stage]:
    parsed = parse_dockerfile(DOCKERFILE.read_text())
    assert len(parsed) >= 2, "multi-stage: build, then a clean runtime stage"
    return parsed[0], parsed[-1]


# -- .dockerignore ---------------------------------------------------------------------


def ignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?|\[[^\]]*\])", pattern):
            if part.startswith("[") and part.endswith("]"):
                regex += part  # a character class, as in Go's filepath.Match
                continue
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        rules.append((re.compile(regex + r"\Z"), negated))
    return rules


def in_context(path: str) -> bool:
    """Whether Docker sends this path (relative, posix) to the builder."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for regex, negated in ignore_rules():
        if any(regex.match(c) for c in candidates):
            excluded = not negated
    return not excluded


def context_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(p for p in listed if (ROOT / p).is_file() and in_context(p))


# -- tests -------------------------------------------------------------------------------


def test_final_stage_is_slim_and_has_no_build_tools() -> None:
    build, runtime = stages()
    assert "-slim" in runtime.base, runtime.base
    assert build.base.split(":")[0] == runtime.base.split(":")[0]
    for command in runtime.all("RUN"):
        assert "pip install" not in command, "dependencies come from the build stage"
        if "apt-get install" in command:
            assert not BUILD_TOOLS.search(command), command
    assert any("pip install" in command for command in build.all("RUN"))
    copied = [a for a in runtime.all("COPY") if a.startswith("--from=")]
    assert any(build.name and f"--from={build.name}" in a for a in copied)


def test_runs_as_the_non_root_user_kubernetes_expects() -> None:
    _, runtime = stages()
    user, _, group = runtime.last("USER").partition(":")
    assert user.isdigit(), "numeric, so Kubernetes can check runAsNonRoot"
    assert int(user) > 0
    for deployment in workers(overlay("prod")):
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user), int(group))


def test_entrypoint_is_the_console_script() -> None:
    _, runtime = stages()
    entrypoint = exec_form(runtime.last("ENTRYPOINT"))
    scripts = contract.console_scripts()
    assert entrypoint == ["leveret"]
    assert entrypoint[0] in scripts, f"pyproject.toml [project.scripts] has {sorted(scripts)}"
    module, _, attr = scripts[entrypoint[0]].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    args = contract.parse_command(exec_form(runtime.last("CMD")))
    assert args is not None
    assert args.command == "worker"


def test_environment_and_healthcheck_match_the_worker() -> None:
    _, runtime = stages()
    env = env_of(runtime)
    assert env["PYTHONPATH"] == "/app"
    assert (["tasks/"], "/app/tasks/") in copies(runtime)
    from leveret.cli.common import load_app

    load_app(env["LEVERET_APP"])
    docs = overlay("prod")
    manifest = environment(docs, workers(docs)[0]["spec"]["template"]["spec"])
    assert env["LEVERET_HEALTH_PORT"] == manifest["LEVERET_HEALTH_PORT"]
    assert runtime.last("EXPOSE") == env["LEVERET_HEALTH_PORT"]
    check = runtime.last("HEALTHCHECK").split(" CMD ", 1)[1]
    contract.parse_command(exec_form(check)[1:])
    assert exec_form(check)[0] == "leveret"
    assert runtime.last("STOPSIGNAL") == "SIGTERM"


def test_context_holds_exactly_what_the_dockerfile_copies() -> None:
    build, runtime = stages()
    sources = {s.rstrip("/") for stage in (build, runtime) for ss, _ in copies(stage) for s in ss}
    files = context_files()
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert any(f == source or f.startswith(source + "/") for f in files), source
    outside = [f for f in files if not any(f == s or f.startswith(s + "/") for s in sources)]
    assert not outside, f"sent to the builder but never copied: {outside[:5]}"
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "deploy/Dockerfile",
        "broker/__pycache__/app.cpython-312.pyc",
        "tasks/stale.pyc",
        ".env",
    ):
        assert not in_context(path), path


def test_wheel_from_the_context_runs_the_app_as_the_image_would(tmp_path: Path) -> None:
    """pip install of the build context, then `leveret` with /app/tasks on PYTHONPATH."""
    build, runtime = stages()
    context = tmp_path / "context"
    for name in context_files():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    app_dir = tmp_path / "app"
    for sources, destination in copies(runtime):
        for source in sources:
            shutil.copytree(context / source, app_dir / Path(destination).relative_to("/app"))
    venv = tmp_path / "venv"
    source_dir = next(d for ss, d in copies(build) for s in ss if s.startswith("broker"))
    assert Path(source_dir).parent == Path("/src"), "the project is installed from /src"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(venv),
            str(context),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    entry_points = next(venv.glob("leveret-*.dist-info/entry_points.txt")).read_text()
    assert re.search(r"^leveret = leveret\.cli:main$", entry_points, re.M)
    assert not (venv / "tasks").exists(), "tasks are copied to /app, not packaged"

    env = {"PYTHONPATH": f"{venv}:{app_dir}", "PATH": f"{venv / 'bin'}", "HOME": str(tmp_path)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import leveret, tasks.handlers as h; print(leveret.__file__, h.__file__)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)), where
    assert where[1].startswith(str(app_dir)), where
    schema = subprocess.run(
        [str(venv / "bin" / "leveret"), "schema", "tasks.handlers:app"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert schema.returncode == 0, schema.stderr
    assert "emails.send_receipt" in schema.stdout
