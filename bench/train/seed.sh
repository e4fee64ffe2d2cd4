#!/usr/bin/env bash
# The seed's own config, unchanged, end to end: predict-buy against the original
# pipeline (pandas + imbalanced-learn's SMOTE + scikit-learn's GradientBoosting with
# max_depth=None, n_estimators=10; bench/train/seed_sklearn.py), side by side.
# The data is synthetic, of the original's size: 381k training rows (train.csv) and
# 127k test rows, made by `predict-buy data synth`.
# Usage: bench/train/seed.sh [REPEATS] [SKLEARN_REPEATS]   (defaults: 5 and 1)
# Each predict-buy run is timed twice over, native and with PREDICT_BUY_SIMD=avx2 (the
# kernels a CPU without AVX-512 runs), interleaved. Prints medians of wall time,
# CPU time (user+sys), peak RSS and test ROC AUC, and the speed-ups.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
repeats=${1:-5}
sk_repeats=${2:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$root/bench/.venv/bin/python" ]; then
  python3 -m venv "$root/bench/.venv"
  "$root/bench/.venv/bin/pip" install -q scikit-learn imbalanced-learn lightgbm pandas
fi
py="$root/bench/.venv/bin/python"
cargo build --release -q -p predict-buy --manifest-path "$root/Cargo.toml"
pb="$root/target/release/predict-buy"

cd "$work"
# shellcheck source=bench/seed_data.sh
. "$root/bench/seed_data.sh"
seed_data "$pb" "$root"

ours() { # label, then env assignments
  local label=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o time.txt env "$@" "$pb" train --config config.yml --json > report.json
  "$py" - "$label" <<'PY' >> results.jsonl
import json, sys
r = json.load(open("report.json"))
e, u, s, m = open("time.txt").read().split()[-4:]
print(json.dumps({"peer": sys.argv[1], "wall_seconds": float(e), "cpu_seconds": float(u) + float(s),
                  "max_rss_mb": int(m) / 1024, "fit_seconds": r["fit_seconds"],
                  "roc_auc": r["test"]["roc_auc"], "train_rows": r["train_rows"]}))
PY
}

: > results.jsonl
# Half of our rounds before the scikit-learn runs and half after, so both sides'
# medians span the same minutes: this shared machine's speed drifts by a third within
# minutes, and one scikit-learn run takes two.
ours_rounds() {
  for _ in $(seq "$1"); do
    ours predict-buy-native PREDICT_BUY_SIMD=native
    ours predict-buy-avx2 PREDICT_BUY_SIMD=avx2
  done
}
sklearn() {
  /usr/bin/time -f '%e %U %S %M' -o time.txt "$py" "$here/seed_sklearn.py" data > sk.json
  "$py" - <<'PY' >> results.jsonl
import json
r = json.load(open("sk.json"))
e, u, s, m = open("time.txt").read().split()[-4:]
r.update(wall_seconds=float(e), cpu_seconds=float(u) + float(s), max_rss_mb=int(m) / 1024)
print(json.dumps(r))
PY
}
ours_rounds $(((repeats + 1) / 2))
for _ in $(seq "$sk_repeats"); do
  sklearn
done
ours_rounds $((repeats / 2))

"$py" - results.jsonl <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["peer"], []).append(r)
med = lambda v, k: statistics.median(x[k] for x in v)
print(f"{'peer':<20}{'runs':>5}{'wall s':>9}{'cpu s':>9}{'fit s':>9}{'RSS MB':>8}{'ROC AUC':>9}")
for k, v in by.items():
    print(f"{k:<20}{len(v):>5}{med(v,'wall_seconds'):>9.2f}{med(v,'cpu_seconds'):>9.2f}"
          f"{med(v,'fit_seconds'):>9.2f}{med(v,'max_rss_mb'):>8.0f}{med(v,'roc_auc'):>9.4f}")
sk = by.get("sklearn-seed")
for k in ("predict-buy-native", "predict-buy-avx2"):
    if sk and k in by:
        print(f"{k}: {med(sk,'wall_seconds')/med(by[k],'wall_seconds'):.0f}x scikit-learn's wall time "
              f"(AUC {med(by[k],'roc_auc')-med(sk,'roc_auc'):+.4f})")
PY
