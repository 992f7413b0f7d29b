#!/usr/bin/env bash
# Schemathesis, with every check, against `meridian dev`: the OpenAPI
# document must describe every answer the gateway gives, and every input
# the document allows must be accepted (docs/testing.md).
#
#   tests/openapi/run.sh MERIDIAN_BINARY [SEED]
#
# Bounded: ST_EXAMPLES test cases per operation and phase (default 25) and
# ST_MAX_TIME seconds in all (default 240). The seed is printed; a failure
# replays with it. The report (JUnit and a cassette of every request) is
# left in openapi-report/.
set -euo pipefail
cd "$(dirname "$0")"
binary="$(realpath "$1")"
seed="${2:-$(( (RANDOM << 15) | RANDOM ))}"
examples="${ST_EXAMPLES:-25}"
max_time="${ST_MAX_TIME:-240}"
# Ports 21000 above the shipped ones: us-east's gateway on 29010, every
# port below the ephemeral range.
offset=21000
base="http://127.0.1.1:$((8010 + offset))"

data="$(mktemp -d)"
# The fuzzer sends thousands of requests a minute from one address and
# one device, and tries bad tokens on purpose: the per-device and
# per-address limits are raised so that it tests the logic behind them
# (their own tests are in tests/e2e/limits.rs and abuse.rs).
RUST_LOG=error "$binary" dev --port-offset "$offset" --data-dir "$data" \
  --request-rate 100000 --auth-failures-per-minute 100000 \
  --registrations-per-minute 100000 >"$data/dev.log" 2>&1 &
dev=$!
cleanup() {
  kill "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

echo "schemathesis against $base, seed $seed, $examples examples per operation, at most $max_time s"
export MERIDIAN_URL="$base" SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$PWD"
st run "$base/v1/openapi.json" \
  --wait-for-schema 120 \
  --checks all \
  --max-examples "$examples" \
  --max-time "$max_time" \
  --seed "$seed" \
  --request-timeout 30 \
  --report junit,vcr --report-dir "${OPENAPI_REPORT:-$PWD/../../openapi-report}" \
  || { status=$?; echo "schemathesis failed (seed $seed); the gateway's log:"; tail -50 "$data/dev.log"; exit "$status"; }
