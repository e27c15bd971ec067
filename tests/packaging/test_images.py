"""Static checks of the Dockerfiles and .dockerignore (no container engine here to build)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.packaging.chart import ROOT

DOCKERFILES = {
    "gateway": ROOT / "gateway" / "Dockerfile",
    "operator": ROOT / "operator" / "Dockerfile",
}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_is_multistage_pinned_and_non_root(name: str) -> None:
    text = DOCKERFILES[name].read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(froms) >= 2, "multi-stage: a build stage and a slim runtime stage"
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    # A full patch version and a slim Debian release, never a floating tag.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base)
    assert all(image == "${PYTHON_IMAGE}" for image, _ in froms)
    runtime = text.split("FROM ${PYTHON_IMAGE} AS runtime", 1)[1]
    users = re.findall(r"^USER\s+(\S+)$", runtime, flags=re.M)
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "apt-get" not in runtime, "no package manager work in the runtime stage"
    assert '"wsfleet"' in text.split("ENTRYPOINT", 1)[1].splitlines()[0]


def test_default_commands_are_real_subcommands() -> None:
    gw = DOCKERFILES["gateway"].read_text()
    op = DOCKERFILES["operator"].read_text()
    assert 'CMD ["gateway"]' in gw
    assert 'CMD ["operator", "--all-namespaces"]' in op
    from wsfleet.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["gateway"]).func is not None


def test_requirements_step_reads_the_real_dependencies() -> None:
    """The Dockerfiles' inline Python turns pyproject's dependencies into requirements."""
    text = DOCKERFILES["gateway"].read_text()
    (script,) = re.findall(r"RUN python - <<'PY' > /tmp/requirements.txt\n(.*?)\nPY\n", text, re.S)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    reqs = proc.stdout.split()
    assert "picows>=1.6" in reqs
    assert "kopf>=1.37" in reqs


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
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILES["gateway"].read_text(), re.M))
    sources = {s.rstrip("/") for line in copied for s in line.split()}
    assert sources <= allowed


def test_gateway_image_default_command_listens_on_every_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`docker run` without args: the ENTRYPOINT + CMD and the image's ENV, through the real
    `wsfleet` parser and gateway settings, listen on 0.0.0.0 on the EXPOSEd ports. (Pods the
    operator makes pass explicit args: tests/operator/test_gateway_contract.py.)"""
    import json
    import os

    pytest.importorskip("wsfleet_gateway.cli", reason="the gateway package is not installed")
    from wsfleet_gateway.cli import settings_from_args

    from wsfleet.cli import build_parser

    text = DOCKERFILES["gateway"].read_text()
    runtime = text.split("FROM ${PYTHON_IMAGE} AS runtime", 1)[1]
    env = dict(re.findall(r"\b(WSFLEET_[A-Z_]+)=(\S+)", runtime))
    (cmd,) = re.findall(r"^CMD (\[.*\])$", runtime, flags=re.M)
    (entry,) = re.findall(r"^ENTRYPOINT (\[.*\])$", runtime, flags=re.M)
    assert json.loads(entry) == ["wsfleet"]
    for name in [n for n in os.environ if n.startswith("WSFLEET_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_from_args(build_parser().parse_args(json.loads(cmd)))
    assert settings.host == "0.0.0.0"
    assert settings.admin_host == "0.0.0.0"
    (exposed,) = re.findall(r"^EXPOSE (.+)$", runtime, flags=re.M)
    assert {settings.port, settings.admin_port} == {int(p) for p in exposed.split()}
