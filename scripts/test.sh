#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# Lint and type-check first (config in pyproject.toml): seconds, and a finding fails the run
# like a test.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
bash .ci/docker-up.sh || echo "test: Docker could not start; the container tests will say why" >&2
set +e
.venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    echo "test: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$rc"
