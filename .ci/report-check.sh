#!/usr/bin/env bash
# The model report, looked at like a person would: train a small model, write its report,
# open it in headless Chromium (Debian's `chromium`), take a screenshot, and check that
# the page drew (SVG plots present, no NaN, no scripts) and that the screenshot is not
# a blank page. Leaves the page and the screenshot in target/ci-report/ for review.
#
# usage: .ci/report-check.sh [PATH-TO-predict-buy]
set -euo pipefail
cd "$(dirname "$0")/.."

pb="${1:-}"
if [ -z "$pb" ]; then
  cargo build -q -p predict-buy
  pb="$PWD/target/debug/predict-buy"
fi

if ! command -v chromium >/dev/null; then
  echo "== installing chromium (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

out="$PWD/target/ci-report"
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
"$pb" data synth --rows 6000 --seed 5 --out data >/dev/null
cat > config.yml <<'YAML'
data:
  train_path: data/train.csv
  test_path: data/test.csv
train:
  random_state: 1
  smote: {k: 5, ratio: 1.0}
model:
  name: GradientBoostingClassifier
  params: {n_estimators: 30, max_depth: 4, random_state: 1}
  store_path: models
YAML
"$pb" train --config config.yml >/dev/null
"$pb" report --model models/model.pbm --out "$out/report.html"

page="$out/report.html"
fail() { echo "report-check: $*" >&2; exit 1; }
plots=$(grep -o '<figure class="plot"' "$page" | wc -l)
svgs=$(grep -o '<svg' "$page" | wc -l)
[ "$plots" -ge 8 ] || fail "only $plots plots on the page"
[ "$svgs" -eq "$plots" ] || fail "$plots plots but $svgs SVG drawings"
grep -q '<polyline' "$page" || fail "no curve was drawn"
! grep -q '<script' "$page" || fail "the page carries a script"
! grep -Eq '>[^<]*\bNaN\b' "$page" || fail "the page says NaN"

# Chromium refuses its sandbox as root in a container; the page is our own, offline.
shot() {
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1280,3000 --screenshot="$2" "file://$1" >/dev/null 2>&1
}
printf '<!DOCTYPE html><html><body></body></html>' > blank.html
shot "$work/blank.html" "$work/blank.png"
shot "$page" "$out/report.png"
[ -s "$out/report.png" ] || fail "no screenshot was written"
size=$(stat -c %s "$out/report.png")
blank=$(stat -c %s "$work/blank.png")
# A drawn page of tables and charts compresses far worse than a white one.
[ "$size" -gt $((blank * 10)) ] || fail "the screenshot ($size bytes) is hardly more than a blank page ($blank bytes)"
echo "report-check: $plots plots; screenshot $out/report.png ($size bytes, blank page $blank bytes)"
