# dayone probe image: Hugging Face transformers.
#
# Two bases, chosen by build arguments (one stage, so the classic builder that the docker SDK
# drives never pulls the base it does not use):
#   CPU (CI, this machine; no registry needed):
#     FLAVOR=cpu         BASE_IMAGE=dayone-base:bookworm   (docker/base-image.sh)
#   production (GPU runners):
#     FLAVOR=production  BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
# The build context is made by matrix/docker_executor.py: this file, probes/, and wheels/
# (local wheels such as torch's CPU build; may be empty).
ARG BASE_IMAGE=dayone-base:bookworm
FROM ${BASE_IMAGE}

ARG FLAVOR=cpu
ARG ENGINE_VERSION=5.23.0
ARG TORCH_VERSION=2.13.0
# Space-separated pip requirements; matrix/docker_executor.py passes the engine registry's list.
ARG REQUIREMENTS="transformers==${ENGINE_VERSION} torch==${TORCH_VERSION} safetensors tokenizers jinja2"
# Where torch's CPU build comes from when wheels/ does not hold it (on a GitHub runner:
# https://download.pytorch.org/whl/cpu). Empty: PyPI plus wheels/ only.
ARG EXTRA_INDEX_URL=""
ARG PROBE_UID=10001

COPY wheels/ /tmp/wheels/
COPY lock/ /tmp/lock/
# The production flavor installs the registry's requirements, pinned by ENGINE_VERSION (DL3013
# cannot see inside the variable); their word splitting is meant (SC2046).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3013,SC2046
RUN set -eu; \
    case "$FLAVOR" in \
      # CPU: exactly the lock the local environment installs (matrix/locks.py).
      cpu) python3 -m venv /opt/venv; \
           /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
             --find-links /tmp/wheels ${EXTRA_INDEX_URL:+--extra-index-url "$EXTRA_INDEX_URL"} \
             -r /tmp/lock/locked.txt; \
           if [ -s /tmp/lock/built.txt ]; then /opt/venv/bin/pip install --no-cache-dir \
             --disable-pip-version-check --no-deps --no-index --find-links /tmp/wheels \
             -r /tmp/lock/built.txt; fi ;; \
      # The production base ships CUDA torch: install the engine only, keep its torch.
      production) python3 -m pip install --no-cache-dir --disable-pip-version-check \
             $(echo "$REQUIREMENTS" | tr ' ' '\n' | grep -v '^torch' | tr '\n' ' ') ;; \
      *) echo "unknown FLAVOR $FLAVOR (cpu or production)" >&2; exit 2 ;; \
    esac; \
    rm -rf /tmp/wheels /tmp/lock
# The environment patches the local venv gets, by the same code (matrix/env_patches.py).
ARG PATCHES=""
COPY patches/ /tmp/patches/
RUN if [ "$FLAVOR" = cpu ] && [ -n "$PATCHES" ]; then \
        DAYONE_CACHE=/tmp/patches/cache PYTHONPATH=/tmp/patches \
        python3 -m matrix.env_patches /opt/venv/bin/python $PATCHES; fi; \
    rm -rf /tmp/patches
ENV PATH=/opt/venv/bin:$PATH

# The same probe code the local executor runs, as a non-root user.
ENV PYTHONPATH=/opt/dayone PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 HOME=/home/probe
COPY probes/ /opt/dayone/probes/
# useradd is missing from some bases: a numeric USER works without a passwd entry.
RUN (useradd --uid "$PROBE_UID" --user-group --no-create-home probe 2>/dev/null || true) \
    && mkdir -p /home/probe && chown "$PROBE_UID:$PROBE_UID" /home/probe \
    && python3 -c "import probes.child, transformers; print('transformers', transformers.__version__)"
WORKDIR /opt/dayone
USER ${PROBE_UID}:${PROBE_UID}
ENTRYPOINT ["python3", "-m", "probes.child"]
LABEL org.opencontainers.image.title="dayone-probe-transformers" dayone.engine="transformers" \
      dayone.flavor="${FLAVOR}" dayone.engine_version="${ENGINE_VERSION}"
