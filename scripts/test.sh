#!/usr/bin/env bash
# Run the test suite. The tests start their own Redis and SeaweedFS (S3) servers
# on free ports; nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
exec .venv/bin/python -m pytest -q "$@"
