# syntax=docker/dockerfile:1
#
# Two images from one file:
#   docker build --target runtime  -t litgpt:dev .            # `litgpt <action> ...`, CUDA-capable torch
#   docker build --target operator -t litgpt-operator:dev .   # `litgpt-operator`, no torch
#
# Layer order is chosen for caching: the dependency layers depend only on pyproject.toml, so editing
# sources rebuilds just the small "install our package" layer, never torch (several GiB).
# Both images run as the non-root user 1000 and own nothing in the image; they may write only to
# the volumes (/checkpoints, /out, /tmp), so the pods work with readOnlyRootFilesystem: true.

ARG PYTHON_VERSION=3.12

# --- base: the interpreter, the user, the writable folders ------------------------------------
FROM python:${PYTHON_VERSION}-slim AS base
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

# --- deps: turn pyproject's dependency lists into requirement files (nothing else copied) -----
FROM base AS deps
WORKDIR /build
COPY pyproject.toml ./
# tomllib is in the standard library from Python 3.11; the lists stay in pyproject.toml only.
RUN python -c "import tomllib, pathlib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
[pathlib.Path(f'requirements-{name}.txt').write_text('\n'.join(p['dependencies'] + extras[name]) + '\n') \
 for name in ('runtime', 'operator')]" \
    && python -m venv /opt/venv \
    && pip install --no-cache-dir --upgrade "pip>=24" "setuptools>=68" "wheel>=0.42"

# --- runtime-build: torch and friends first, then our package -------------------------------
FROM deps AS runtime-build
# PyPI's Linux x86_64 torch wheels are built with CUDA (the nvidia-* libraries come as wheels);
# the host's driver is mounted by the NVIDIA container toolkit at run time.
RUN pip install --no-cache-dir -r requirements-runtime.txt
COPY README.md ./
COPY runtime/ runtime/
COPY operator/ operator/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && python -c "import litgpt_runtime.__main__, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# --- operator-build: kopf + kubernetes client, then our package (litgpt comes along torch-free)
FROM deps AS operator-build
RUN pip install --no-cache-dir -r requirements-operator.txt
COPY README.md ./
COPY runtime/ runtime/
COPY operator/ operator/
# The operator calls litgpt_runtime.fit and litgpt_runtime.config, which import no torch; the check proves it.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && python -c "import sys, litgpt_runtime.fit, litgpt_operator; assert 'torch' not in sys.modules"

# --- runtime: what training, download and serving pods run ----------------------------------
FROM base AS runtime
COPY --from=runtime-build /opt/venv /opt/venv
USER 1000:1000
WORKDIR /out
VOLUME ["/checkpoints", "/out", "/tmp"]
EXPOSE 8000
ENTRYPOINT ["litgpt"]
CMD ["--help"]

# --- operator: the controller (last stage, so a plain `docker build .` gives the small image) -
FROM base AS operator
COPY --from=operator-build /opt/venv /opt/venv
USER 1000:1000
WORKDIR /tmp
VOLUME ["/tmp"]
# 8080: kopf's liveness probe; 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["litgpt-operator"]
