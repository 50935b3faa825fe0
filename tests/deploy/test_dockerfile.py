"""Dockerfile and .dockerignore, checked without building: pinned bases, a build stage
that stays behind, a non-root runtime with a health check, and a build context that
holds everything the COPY lines need."""
from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make ", "python3-dev", "libpq-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their (KEYWORD, arguments) instructions; continuations joined."""
    text = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last match wins;
    a pattern matching a parent directory covers what is inside it)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def copy_sources(stage: Stage) -> list[str]:
    sources = []
    for args in stage.all("COPY"):
        if "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


def test_every_base_image_is_pinned(stages):
    names = set()
    for stage in stages:
        if stage.base in names:
            continue
        repository, _, tag = stage.base.partition(":")
        assert tag and tag != "latest", f"FROM {stage.base} is not pinned"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"FROM {stage.base}: not a full version"
        if stage.name:
            names.add(stage.name)


def test_runtime_is_a_slim_python_without_build_tools(stages):
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    runtime = stages[-1]
    assert runtime.base.startswith("python:3.12") and "slim" in runtime.base
    for args in runtime.all("RUN"):
        assert not any(tool in args for tool in BUILD_TOOLS), args
    # What the build stage made arrives as a whole venv.
    assert any(args.startswith("--from=") for args in runtime.all("COPY"))


def test_build_stage_installs_the_package_into_a_venv(stages):
    build_runs = " ".join(args for stage in stages[:-1] for args in stage.all("RUN"))
    venv = re.search(r"python -m venv (\S+)", build_runs)
    assert venv, "no venv is created"
    assert re.search(rf"{re.escape(venv[1])}/bin/pip install [^&]*\.(\s|$)", build_runs)
    runtime = stages[-1]
    assert any(venv[1] in args for args in runtime.all("COPY") if args.startswith("--from="))
    assert any(f"PATH={venv[1]}/bin" in args for args in runtime.all("ENV"))


def test_runtime_runs_as_a_non_root_user(stages):
    users = stages[-1].all("USER")
    assert users, "no USER: the app would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_runtime_has_a_healthcheck_on_healthz(stages):
    checks = stages[-1].all("HEALTHCHECK")
    assert len(checks) == 1
    script = re.search(r"(/\S+\.py)", checks[0])[1]
    # The script is copied into the image, and its `http` mode asks /healthz.
    assert any(args.split()[-1] == script for args in stages[-1].all("COPY"))
    assert '"http"' in checks[0]
    assert "/healthz" in (REPO / "deploy" / "healthcheck.py").read_text()


def test_default_command_serves(stages):
    cmd = stages[-1].all("CMD")[-1]
    assert cmd.startswith('["pulse", "serve"')


def test_copied_sources_exist_and_are_in_the_build_context(stages, ignore_patterns):
    sources = [source for stage in stages for source in copy_sources(stage)]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source, ignore_patterns), f"COPY {source}: excluded by .dockerignore"
        for path in (REPO / source).rglob("*.py") if (REPO / source).is_dir() else []:
            relative = path.relative_to(REPO).as_posix()
            if "__pycache__" not in relative:
                assert not dockerignored(relative, ignore_patterns), relative


def test_every_application_package_is_copied(stages):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    # loadtest/ is for `make bench` on a workstation, not for the server image.
    packages.discard("loadtest")
    copied = {source.strip("/").split("/")[0] for stage in stages for source in copy_sources(stage)}
    assert packages <= copied, packages - copied
    # Migrations ship as package data inside storage/.
    assert "storage" in copied


def test_dockerignore_keeps_local_state_out(ignore_patterns):
    for path in (".venv/bin/python", ".git/HEAD", ".pulse-data/pg/PG_VERSION",
                 "tests/conftest.py", "server/__pycache__/app.cpython-312.pyc"):
        assert dockerignored(path, ignore_patterns), path
    assert not dockerignored("kernel/settings.py", ignore_patterns)
