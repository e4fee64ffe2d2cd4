#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with Schemathesis (PyPI), every
# check on, against a live `predict-buy serve` on 127.0.0.1 with a small model and the
# admin route enabled. Bounded in examples and time; any failure fails the script.
#
#   bash .ci/schemathesis.sh [PREDICT_BUY_BINARY]
#
# Schemathesis lives in a venv under target/ (made once, then reused). Set
# SCHEMATHESIS_MAX_EXAMPLES or SCHEMATHESIS_MAX_TIME to change the bounds.
set -euo pipefail
cd "$(dirname "$0")/.."

pb="${1:-}"
if [ -z "$pb" ]; then
  cargo build -q -p predict-buy
  pb="$PWD/target/debug/predict-buy"
fi
pb="$(realpath "$pb")"
venv="$PWD/target/schemathesis-venv"
version="4.32.5"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  echo "installing schemathesis $version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A small model, trained as the CLI tests train theirs.
"$pb" data synth --rows 3000 --seed 7 --out "$work/data" 2>/dev/null
cat > "$work/config.yml" <<YAML
data:
  train_path: data/train.csv
  test_path: data/test.csv
train:
  test_size: 0.2
  random_state: 1
model:
  name: GradientBoostingClassifier
  params: {n_estimators: 5, max_depth: 3, random_state: 1}
  store_path: models
YAML
(cd "$work" && "$pb" train --config config.yml --out models/model.pbm >/dev/null 2>&1)

token="schemathesis-$RANDOM$RANDOM"
printf '%s\n' "$token" > "$work/token"
"$pb" serve --model "$work/models/model.pbm" --addr 127.0.0.1:0 --addr-file "$work/addr" \
  --admin-token-file "$work/token" --drain 0s 2>"$work/serve.log" &
server=$!
for _ in $(seq 1 300); do
  [ -s "$work/addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/addr" ] || { echo "the server did not start" >&2; cat "$work/serve.log" >&2; exit 1; }
base="http://$(cat "$work/addr")"
echo "fuzzing $base/openapi.json"

status=0
# Schemathesis keeps its example database in the current folder: the scratch one.
cd "$work"
timeout "${SCHEMATHESIS_TIMEOUT:-600}" "$venv/bin/schemathesis" --no-color run "$base/openapi.json" \
  --checks all \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --max-time "${SCHEMATHESIS_MAX_TIME:-240}" \
  --header "Authorization: Bearer $token" \
  --seed 1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures (exit $status); the server's log:" >&2
  tail -n 50 "$work/serve.log" >&2
  exit 1
fi
echo "schemathesis: no failures"
