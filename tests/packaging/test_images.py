"""Static checks of the root Dockerfile and .dockerignore (no container engine here to build).

One Dockerfile, two final targets (``gateway``, ``operator``) on a shared ``runtime``
stage. A small parser below splits it into stages so that every check reads what
``docker build --target X`` would run: X's own instructions after those of its parents.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.packaging.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"
TARGETS = {
    "gateway": ["gateway"],
    "operator": ["operator", "--all-namespaces"],
}
"""Each final target and its default command (CMD)."""
NON_ROOT_UID = "10001"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions with continuations joined; comments and heredoc bodies dropped."""
    out: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            for body in lines:  # skip to the terminator
                if body.strip() == heredoc.group(1):
                    break
        out.append(line)
    return out


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARGs, stages by name), in file order."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), flags=re.I)
            assert match, f"every stage is named: {line}"
            stage = Stage(match.group(2), match.group(1))
            assert stage.name not in stages
            stages[stage.name] = stage
        elif stage is None:
            assert keyword == "ARG", f"only ARG before the first FROM: {line}"
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip()
        else:
            stage.instructions.append((keyword, rest.strip()))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())


def chain(target: str) -> list[Stage]:
    """`target` and the stages it builds on, base first."""
    stages = [STAGES[target]]
    while stages[0].base in STAGES:
        stages.insert(0, STAGES[stages[0].base])
    return stages


def effective(target: str, keyword: str) -> list[str]:
    return [args for stage in chain(target) for args in stage.all(keyword)]


def image_env(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in effective(target, "ENV"):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def test_one_dockerfile_replaces_the_per_component_ones() -> None:
    assert not (ROOT / "gateway" / "Dockerfile").exists()
    assert not (ROOT / "operator" / "Dockerfile").exists()
    assert set(TARGETS) <= set(STAGES)


def test_stages_are_pinned_and_targets_share_build_and_runtime() -> None:
    assert list(ARGS) == ["PYTHON_IMAGE"], "one global ARG: the pinned base"
    base = ARGS["PYTHON_IMAGE"]
    # A full patch version and a slim Debian release, never a floating tag.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base)
    external = {s.base for s in STAGES.values() if s.base not in STAGES}
    assert external == {"${PYTHON_IMAGE}"}, "every stage is the pinned base or another stage"
    for target in TARGETS:
        assert [s.name for s in chain(target)] == ["runtime", target]
    build = STAGES["build"]
    assert build.base == "${PYTHON_IMAGE}"
    runtime = STAGES["runtime"]
    assert runtime.all("COPY") == [], "no venv in the shared stage: each target has its own"
    for target in TARGETS:
        assert STAGES[f"build-{target}"].base == "build"
        assert f"--from=build-{target} /opt/venv /opt/venv" in STAGES[target].all("COPY")
    # Nothing of the build (compilers, pip caches, sources) reaches the runtime stages.
    assert all("--from" in c for s in (runtime, *map(STAGES.get, TARGETS)) for c in s.all("COPY"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_dependencies_are_a_cached_wheel_only_layer_before_the_source(target: str) -> None:
    assert any(a.startswith("pyproject.toml") for a in STAGES["build"].all("COPY"))
    steps = STAGES[f"build-{target}"].instructions
    deps = next(
        i for i, (kw, a) in enumerate(steps) if kw == "RUN" and f"-r /tmp/{target}.txt" in a
    )
    assert "--only-binary=:all:" in steps[deps][1]
    copies = [(i, a) for i, (kw, a) in enumerate(steps) if kw == "COPY"]
    assert copies
    assert all(i > deps for i, a in copies if a.startswith(("src/", "gateway/", "operator/")))
    (install,) = [a for kw, a in steps if kw == "RUN" and "pip install --no-deps ." in a]
    assert "python -m compileall" in install, "bytecode baked in: nothing written at runtime"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_runs_non_root_with_its_command(target: str) -> None:
    own = STAGES[target]
    # The target's own last USER (not only the inherited one) is the non-root uid.
    users = own.all("USER")
    assert users, f"{target} sets USER itself"
    assert users[-1].split(":") == [NON_ROOT_UID, NON_ROOT_UID]
    assert [kw for kw, _ in own.instructions][-2:] == ["USER", "CMD"]
    assert json.loads(own.all("CMD")[-1]) == TARGETS[target]
    (entry,) = effective(target, "ENTRYPOINT")
    assert json.loads(entry) == ["wsfleet"]
    assert effective(target, "EXPOSE") == ["8080 9090"]
    assert not any("apt-get" in run for run in effective(target, "RUN")), "no package manager"
    labels = " ".join(effective(target, "LABEL"))
    assert f'org.opencontainers.image.title="wsfleet-{target}"' in labels
    useradd = " ".join(effective(target, "RUN"))
    assert f"--uid {NON_ROOT_UID}" in useradd
    assert f"--gid {NON_ROOT_UID}" in useradd
    env = image_env(target)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "read-only root filesystem friendly"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_default_commands_are_real_subcommands() -> None:
    from wsfleet.cli import build_parser

    parser = build_parser()
    for target, cmd in TARGETS.items():
        args = parser.parse_args(cmd)
        assert args.func is not None, target


def test_only_the_gateway_gets_listen_env() -> None:
    assert not [name for name in image_env("operator") if name.startswith("WSFLEET_")]
    assert set(image_env("gateway")) >= {"WSFLEET_HOST", "WSFLEET_ADMIN_PORT"}


def test_requirements_step_reads_each_images_own_extra(tmp_path: Path) -> None:
    """The Dockerfile's inline Python writes one requirements file per image: the base
    dependencies plus that image's extra, nothing of the other's."""
    text = DOCKERFILE.read_text()
    (script,) = re.findall(r"RUN python - <<'PY'\n(.*?)\nPY\n", text, re.S)
    script = script.replace("/tmp/", f"{tmp_path}/")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    gateway = (tmp_path / "gateway.txt").read_text().split()
    operator = (tmp_path / "operator.txt").read_text().split()
    assert "picows>=1.6" in gateway
    assert "pydantic>=2.6" in gateway
    assert not [r for r in gateway if r.startswith(("kopf", "numpy", "matplotlib"))]
    assert "kopf>=1.37" in operator
    assert not [r for r in operator if r.startswith(("picows", "uvloop", "matplotlib"))]


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "ignore everything, then allow what the images need"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "src", "gateway", "operator"}
    for path in ("pyproject.toml", "src", "gateway", "operator"):
        assert (ROOT / path).exists()
    copied = [c for s in STAGES.values() for c in s.all("COPY") if not c.startswith("--from")]
    sources = {s.rstrip("/") for line in copied for s in line.split()[:-1]}
    assert sources <= allowed


def test_gateway_image_default_command_listens_on_every_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`docker run` without args: the ENTRYPOINT + CMD and the image's ENV, through the real
    `wsfleet` parser and gateway settings, listen on 0.0.0.0 on the EXPOSEd ports. (Pods the
    operator makes pass explicit args: tests/operator/test_gateway_contract.py.)"""
    import os

    from wsfleet_gateway.cli import settings_from_args

    from wsfleet.cli import build_parser

    for name in [n for n in os.environ if n.startswith("WSFLEET_")]:
        monkeypatch.delenv(name)
    for name, value in image_env("gateway").items():
        if name.startswith("WSFLEET_"):
            monkeypatch.setenv(name, value)
    (entry,) = effective("gateway", "ENTRYPOINT")
    (cmd,) = STAGES["gateway"].all("CMD")
    argv = [*json.loads(entry), *json.loads(cmd)]
    assert argv[0] == "wsfleet"
    settings = settings_from_args(build_parser().parse_args(argv[1:]))
    assert settings.host == "0.0.0.0"
    assert settings.admin_host == "0.0.0.0"
    (exposed,) = effective("gateway", "EXPOSE")
    assert {settings.port, settings.admin_port} == {int(p) for p in exposed.split()}
