# syntax=docker/dockerfile:1
# secret-injector image: the webhook and its CLI, run as a non-root numeric user.
#   docker build -t secret-injector:dev .
# The chart runs it with `serve --config /etc/secret-injector/config/config.yaml`.

ARG PYTHON_IMAGE=python:3.12-slim

# ---- builder: wheels of the project and its dependencies, into a virtualenv ----
FROM ${PYTHON_IMAGE} AS builder
# Compilers only here, for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/secret-injector
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN /opt/secret-injector/bin/pip install . \
    && /opt/secret-injector/bin/pip uninstall -y pip \
    && find /opt/secret-injector -name '__pycache__' -prune -exec rm -rf {} +

# ---- final: the slim base, the virtualenv, nothing else ----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="secret-injector" \
      org.opencontainers.image.description="Kubernetes admission webhook that injects secrets from Vault/OpenBao and AWS through the Secrets Store CSI driver" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --gid 65532 secret-injector \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin secret-injector
COPY --from=builder /opt/secret-injector /opt/secret-injector
ENV PATH=/opt/secret-injector/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
# 8443: HTTPS webhook (/mutate, /validate, /healthz, /readyz); 9090: plain-HTTP /metrics.
EXPOSE 8443 9090
ENTRYPOINT ["secret-injector"]
CMD ["serve", "--config", "/etc/secret-injector/config.yaml"]
