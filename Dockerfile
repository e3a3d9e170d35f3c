# syntax=docker/dockerfile:1
#
# Two images from one file:
#   docker build --target runtime  -t litgpt:dev .            # `litgpt <action> ...`, CUDA-capable torch
#   docker build --target operator -t litgpt-operator:dev .   # `litgpt-operator`, no torch
# Without Docker: hack/images.sh builds both with buildah from a Debian base it makes itself.
#
# Layer order is chosen for caching: each dependency layer depends only on its requirement list
# (made from pyproject.toml), and our package goes into each final image as its own small layer on
# top of the dependencies, so editing sources rebuilds just that layer, never torch (several GiB).
# Both images run as the non-root user 1000 and own nothing in the image; they may write only to
# the volumes (/checkpoints, /out, /tmp), so the pods work with readOnlyRootFilesystem: true.

ARG PYTHON_VERSION=3.12
# Any Debian-like image with python3 (>= 3.11: tomllib), venv and ca-certificates; hack/images.sh
# passes one made with mmdebstrap, so nothing is pulled.
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

# --- base: the interpreter, the user, the writable folders ------------------------------------
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp
# Caches that torch, triton and the Hub client write go to /tmp (HOME) rather than the image.
RUN groupadd --system --gid 1000 litgpt \
    && useradd --system --uid 1000 --gid litgpt --no-create-home --home-dir /tmp --shell /usr/sbin/nologin litgpt \
    && mkdir -p /checkpoints /out \
    && chown litgpt:litgpt /checkpoints /out

# --- requirements: pyproject's dependency lists as requirement files (nothing else copied) -----
FROM base AS requirements
WORKDIR /build
COPY pyproject.toml ./
# tomllib is in the standard library from Python 3.11; the lists stay in pyproject.toml only.
RUN python -c "import tomllib, pathlib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
[pathlib.Path(f'requirements-{name}.txt').write_text('\n'.join(p['dependencies'] + extras[name]) + '\n') \
 for name in ('runtime', 'operator')]"

# --- deps: the virtualenv and its installers ---------------------------------------------------
FROM base AS deps
WORKDIR /build
# Steps that reach the package index mount the builder's pip settings and CA bundle as secrets
# (hack/images.sh passes this machine's; its settings name the bundle's path). Secrets never enter
# a layer; they are mounted at paths the image does not have, as a mount over an existing file
# can remove it. Without them pip uses PyPI and its own CA bundle.
# setuptools as pyproject's build-system asks (77: the SPDX `license` string), for the package stage.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca-certificates.crt,target=/etc/pip-ca-certificates.crt \
    python -m venv /opt/venv \
    && pip install --no-cache-dir --upgrade "pip>=24" "setuptools>=77" "wheel>=0.42"

# --- runtime-deps: torch and friends (the big layer) -------------------------------------------
# Each dependency stage copies only its own requirement file: the layer is rebuilt when that list
# changes, not when anything else in pyproject.toml does.
FROM deps AS runtime-deps
COPY --from=requirements /build/requirements-runtime.txt ./
# PyPI's Linux x86_64 torch wheels are built with CUDA (the nvidia-* libraries come as wheels);
# the host's driver is mounted by the NVIDIA container toolkit at run time.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca-certificates.crt,target=/etc/pip-ca-certificates.crt \
    pip install --no-cache-dir -r requirements-runtime.txt

# --- operator-deps: kopf + kubernetes client, no torch ---------------------------------------
FROM deps AS operator-deps
COPY --from=requirements /build/requirements-operator.txt ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca-certificates.crt,target=/etc/pip-ca-certificates.crt \
    pip install --no-cache-dir -r requirements-operator.txt

# --- package: our package alone (runtime/ and operator/; the dev tooling stays out), laid out as
# in the virtualenv (bin/, lib/python3.X/site-packages/) so each image adds it as one small layer
FROM deps AS package
COPY pyproject.toml README.md ./
COPY runtime/ runtime/
COPY operator/ operator/
RUN pip install --no-cache-dir --no-deps --no-build-isolation --prefix /package .

# --- runtime: what training, download and serving pods run ----------------------------------
# Built on its dependency stage rather than copying the virtualenv out of it, so the image shares
# that layer with the build cache (one copy of torch on disk, none made at build time); our
# package is merged into the virtualenv as a small layer on top.
FROM runtime-deps AS runtime
COPY --from=package /package/ /opt/venv/
RUN python -c "import litgpt_runtime.__main__, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
USER 1000:1000
WORKDIR /out
VOLUME ["/checkpoints", "/out", "/tmp"]
EXPOSE 8000
ENTRYPOINT ["litgpt"]
CMD ["--help"]

# --- operator: the controller (last stage, so a plain `docker build .` gives the small image) -
FROM operator-deps AS operator
COPY --from=package /package/ /opt/venv/
# The operator calls litgpt_runtime.fit and litgpt_runtime.config, which import no torch; the check proves it.
RUN python -c "import sys, litgpt_runtime.fit, litgpt_operator; assert 'torch' not in sys.modules"
USER 1000:1000
WORKDIR /tmp
VOLUME ["/tmp"]
# 8080: kopf's liveness probe; 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["litgpt-operator"]
