# dayone probe image: llama.cpp through llama-cpp-python (ENGINE_VERSION is its version).
#
# Two bases, chosen by build arguments (one stage, so the classic builder that the docker SDK
# drives never pulls the base it does not use):
#   CPU (CI, this machine):  FLAVOR=cpu  BASE_IMAGE=dayone-base:bookworm
#       installs REQUIREMENTS; the llama-cpp-python wheel that dayone builds once per version
#       (matrix/environments.build_wheel, ~4.5 min) travels in wheels/, so nothing compiles here.
#   production (GPU):        FLAVOR=production  BASE_IMAGE=ghcr.io/ggml-org/llama.cpp:full-cuda
#       llama.cpp's own CUDA image (nvcc, python3, the converter's requirements); the bindings
#       are compiled against CUDA on top of it.
# The build context is made by matrix/docker_executor.py: this file, probes/, wheels/.
ARG BASE_IMAGE=dayone-base:bookworm
FROM ${BASE_IMAGE}

ARG FLAVOR=cpu
ARG ENGINE_VERSION=0.3.36
# gguf: the converter's writer; numpy/safetensors/sentencepiece: convert_hf_to_gguf.py.
ARG REQUIREMENTS="llama-cpp-python==${ENGINE_VERSION} gguf numpy safetensors sentencepiece"
ARG EXTRA_INDEX_URL=""
ARG CUDA_CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF"
ARG PROBE_UID=10001

# llama.cpp's libraries link libgomp (OpenMP), which the debootstrap base lacks; without it
# llama_cpp fails to import ("libgomp.so.1: cannot open shared object file").
# hadolint ignore=DL3008
RUN if [ "$FLAVOR" = cpu ] && [ ! -e /usr/lib/x86_64-linux-gnu/libgomp.so.1 ] \
        && [ ! -e /usr/lib/aarch64-linux-gnu/libgomp.so.1 ]; then \
        apt-get update -qq && apt-get install -y -qq --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; fi
COPY wheels/ /tmp/wheels/
COPY lock/ /tmp/lock/
# The production flavor installs the registry's requirements, pinned by ENGINE_VERSION (DL3013
# cannot see inside the variable).
# hadolint ignore=DL3013
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
      production) CMAKE_ARGS="$CUDA_CMAKE_ARGS" PIP_BREAK_SYSTEM_PACKAGES=1 \
           python3 -m pip install --no-cache-dir $REQUIREMENTS ;; \
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
    PYTHONPATH=/opt/dayone PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/home/probe

# The same probe code the local executor runs, as a non-root user.
COPY probes/ /opt/dayone/probes/
RUN (useradd --uid "$PROBE_UID" --user-group --no-create-home probe 2>/dev/null || true) \
    && mkdir -p /home/probe && chown "$PROBE_UID:$PROBE_UID" /home/probe \
    && python3 -c "import probes.child, llama_cpp; print('llama_cpp', llama_cpp.__version__)"
WORKDIR /opt/dayone
USER ${PROBE_UID}:${PROBE_UID}
# llama.cpp's image has its own entry point (tools.sh): ours replaces it.
ENTRYPOINT ["python3", "-m", "probes.child"]
LABEL org.opencontainers.image.title="dayone-probe-llamacpp" dayone.engine="llamacpp" \
      dayone.flavor="${FLAVOR}" dayone.engine_version="${ENGINE_VERSION}"
