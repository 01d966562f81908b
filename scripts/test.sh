#!/usr/bin/env bash
# Run the test suite. The tests start their own Redis and SeaweedFS (S3) servers
# on free ports; nothing needs to be running beforehand. ruff and mypy (strict) run first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
# Lint and types first: a regression fails the run before the (slower) tests.
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
