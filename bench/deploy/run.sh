#!/usr/bin/env bash
# Deploy benchmark: two `predict-buy serve` processes follow nonprod under load while
# it goes v0.1.0 → v0.2.0 → v0.1.0 ROUNDS times; prints each transition's
# verification time (median, worst) and the failed-request count.
#
#   bench/deploy/run.sh [ROUNDS]     (default 10)
#
# Runs twice: with the deploy's POST /admin/reload nudge, and with servers finding the
# change by polling the registry alone (every 200 ms).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${1:-10}"
cargo build --release -q -p predict-buy
cargo build --release -q -p predict-buy-deploy --example deploy_bench
BIN="$PWD/target/release/predict-buy"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# v0.1.0: the quickstart model; v0.2.0: a smaller model trained on the same data.
"$BIN" quickstart --dir "$WORK" --port "$((20000 + RANDOM % 20000))" --rows 20000 --no-serve >/dev/null 2>&1
cat > "$WORK/v2.yml" <<'YAML'
data: {train_path: data/train.csv, test_path: data/test.csv, target: Result}
model:
  name: GradientBoostingClassifier
  params: {n_estimators: 40, max_depth: 4, random_state: 7}
  store_path: models/
YAML
(cd "$WORK" && "$BIN" train --config v2.yml --out models/v2.pbm >/dev/null && "$BIN" release create v0.2.0 --model models/v2.pbm >/dev/null 2>&1)

for mode in "" "--no-nudge"; do
  echo "== deploy_bench $mode"
  target/release/examples/deploy_bench --bin "$BIN" --registry "$WORK/.predict-buy/registry" \
    --rounds "$ROUNDS" --poll-interval 200ms $mode
  echo
done
