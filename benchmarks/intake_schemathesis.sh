#!/usr/bin/env bash
# Property-based fuzzing of the intake API from its own OpenAPI document (schemathesis).
# Starts a throwaway intake on a free loopback port, makes an admin token, and reports whether any
# request produced a server error (5xx). Other schemathesis checks are printed for information.
#   benchmarks/intake_schemathesis.sh [max-examples per operation, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(realpath "${VENV:-.venv}")
export ARENA_HOME=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null; rm -rf "$ARENA_HOME"' EXIT
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export ARENA_PORT=$PORT ARENA_PUBLIC_URL=http://127.0.0.1:$PORT ARENA_DAILY_QUOTA=100000 ARENA_MAX_CONCURRENT=100000 ARENA_UPLOAD_RATE_LIMIT=100000
TOKEN=$("$VENV/bin/arena" admin create-user fuzzer --admin 2>/dev/null)
"$VENV/bin/python" -m intake >"$ARENA_HOME/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
set +e
(cd "$ARENA_HOME" && "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" -H "Authorization: Bearer $TOKEN" \
  --checks all --max-examples "${1:-50}" --no-color 2>&1) | tee "$ARENA_HOME/schemathesis.txt" | tail -40
set -e
if grep -q "not_a_server_error" "$ARENA_HOME/schemathesis.txt" && grep -A3 "not_a_server_error" "$ARENA_HOME/schemathesis.txt" | grep -qiE "fail|✘|[1-9][0-9]* failed"; then
  echo "RESULT: server errors (5xx) found"; exit 1
fi
if grep -q "Traceback" "$ARENA_HOME/server.log"; then
  echo "RESULT: the server logged tracebacks:"; grep -A20 Traceback "$ARENA_HOME/server.log" | head -60; exit 1
fi
echo "RESULT: no 5xx"
