#!/usr/bin/env bash
# Run the whole system locally: private Redis and S3 in ./.echo, the gateway on
# http://127.0.0.1:8080 and every consumer group, in one process. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh local,speech
exec .venv/bin/echo-gateway dev "$@"
