#!/usr/bin/env bash
# Set up dayone on a fresh Debian machine: system packages it needs (when missing), a virtual
# environment at .venv with dayone and its test tools. Engine environments are NOT built here:
# dayone builds each one itself on first use (cached under ${DAYONE_CACHE:-~/.cache/dayone}).
#   scripts/setup.sh          dayone only
#   scripts/setup.sh --test   also what the test suite needs (chromium, docker, postgresql)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_missing=()
need() { command -v "$1" >/dev/null 2>&1 || apt_missing+=("$2"); }
need cmake cmake           # llama-cpp-python builds from source
need g++ g++
# vLLM's CPU kernels (vllm._C) link libnuma; without it every vLLM load fails. (Not `grep -q`:
# under pipefail its early exit kills ldconfig with SIGPIPE and the check always failed.)
ldconfig -p 2>/dev/null | grep 'libnuma\.so\.1' >/dev/null || apt_missing+=(libnuma1)
if [ "$want_test" = 1 ]; then
    need chromium chromium
    need dockerd docker.io
    need debootstrap debootstrap
    [ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_missing+=(postgresql)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing ${apt_missing[*]} (apt)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
    else
        echo "setup: missing system packages: ${apt_missing[*]} (install them, or run as root)" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
extras=""
[ "$want_test" = 1 ] && extras="[dev]"
# (this machine's pip config names local index folders that lack most packages: drop that noise)
.venv/bin/python -m pip install -q -e ".${extras}" 2>&1 \
    | grep -v -e "^WARNING: Location 'file:" -e "^WARNING: Running pip as" || true
.venv/bin/python -c "import service.cli" || { echo "setup: dayone did not install" >&2; exit 1; }
echo "setup: ready: $(.venv/bin/dayone --help >/dev/null && echo dayone OK)" >&2
