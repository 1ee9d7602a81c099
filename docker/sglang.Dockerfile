# dayone probe image: SGLang.
#
# Two bases, chosen by build arguments (one stage, so the classic builder that the docker SDK
# drives never pulls the base it does not use):
#   production (GPU, SGLang's target): FLAVOR=production BASE_IMAGE=lmsysorg/sglang:v${ENGINE_VERSION}
#                                      the release image as is
#   CPU (not SGLang's supported target): FLAVOR=cpu BASE_IMAGE=dayone-base:bookworm installs
#       REQUIREMENTS (the engine registry's list: SGLang's dependencies minus the CUDA ones);
#       results from it are labelled hardware=cpu-unsupported-path by the probe.
# The build context is made by matrix/docker_executor.py: this file, probes/, wheels/.
ARG BASE_IMAGE=lmsysorg/sglang:v0.5.23
FROM ${BASE_IMAGE}

ARG FLAVOR=production
ARG ENGINE_VERSION=0.5.23
ARG REQUIREMENTS="sglang==${ENGINE_VERSION} torch==2.13.0"
ARG EXTRA_INDEX_URL=""
ARG PROBE_UID=10001

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
      production) python3 -c "import sglang" ;; \
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
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SGLANG_DISABLE_TELEMETRY=1

# The same probe code the local executor runs, as a non-root user. SGLang is probed through
# its server protocol (/health, /get_model_info, /v1/chat/completions), started by the probe.
COPY probes/ /opt/dayone/probes/
RUN (useradd --uid "$PROBE_UID" --user-group --no-create-home probe 2>/dev/null || true) \
    && mkdir -p /home/probe && chown "$PROBE_UID:$PROBE_UID" /home/probe \
    && python3 -c "import probes.child; from importlib.metadata import version; \
print('sglang', version('sglang'))"
WORKDIR /opt/dayone
USER ${PROBE_UID}:${PROBE_UID}
ENTRYPOINT ["python3", "-m", "probes.child"]
LABEL org.opencontainers.image.title="dayone-probe-sglang" dayone.engine="sglang" \
      dayone.flavor="${FLAVOR}" dayone.engine_version="${ENGINE_VERSION}"
