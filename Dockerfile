# syntax=docker/dockerfile:1.7
# The wsfleet images: one build, two targets. From the repository root:
#   docker build --target gateway  -t ghcr.io/wsfleet/gateway:dev .
#   docker build --target operator -t ghcr.io/wsfleet/operator:dev .
# Both targets share the `runtime` stage (a non-root user) and the requirements step of
# `build`; each has its own venv with only its own dependencies (`build-gateway`,
# `build-operator`), its labels, default env and default command.
# Pinned base: bump the tag (and the digest, with `docker buildx imagetools inspect`)
# deliberately; every stage must use the same Python.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Each image installs only its own extra (pyproject): the gateway's carries no kopf or
# numpy, the operator's no picows or uvloop. Requirements first (cached while only the
# source changes), then the project itself.
COPY pyproject.toml README.md ./
RUN python - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for extra in ("gateway", "operator"):
    reqs = project["dependencies"] + project["optional-dependencies"][extra]
    open(f"/tmp/{extra}.txt", "w").write("\n".join(reqs))
PY

FROM build AS build-gateway
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/gateway.txt
COPY src/ src/
COPY gateway/ gateway/
COPY operator/ operator/
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/python -m compileall -q /opt/venv

FROM build AS build-operator
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/operator.txt
COPY src/ src/
COPY gateway/ gateway/
COPY operator/ operator/
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/python -m compileall -q /opt/venv

# Shared by both targets: a non-root user, no package manager work; each target brings
# its own venv.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/wsfleet/wsfleet" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 wsfleet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wsfleet
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 9090
# Read-only root filesystem friendly: nothing is written outside /tmp.
ENTRYPOINT ["wsfleet"]

# The operator (kopf). The Helm chart runs `wsfleet operator --all-namespaces|--namespace NS`.
FROM runtime AS operator
LABEL org.opencontainers.image.title="wsfleet-operator" \
      org.opencontainers.image.description="wsfleet Kubernetes operator: WebSocketFleet reconciliation and autoscaling"
COPY --from=build-operator /opt/venv /opt/venv
USER 10001:10001
CMD ["operator", "--all-namespaces"]

# The gateway. Settings come from WSFLEET_* env vars (the operator's ConfigMap); the default
# command serves WebSocket on :8080 and admin (/healthz /readyz /metrics, publish API) on :9090.
# Last stage: a plain `docker build .` builds the gateway.
FROM runtime AS gateway
LABEL org.opencontainers.image.title="wsfleet-gateway" \
      org.opencontainers.image.description="wsfleet WebSocket channel gateway (picows + uvloop)"
COPY --from=build-gateway /opt/venv /opt/venv
ENV WSFLEET_HOST=0.0.0.0 \
    WSFLEET_PORT=8080 \
    WSFLEET_ADMIN_HOST=0.0.0.0 \
    WSFLEET_ADMIN_PORT=9090
USER 10001:10001
CMD ["gateway"]
