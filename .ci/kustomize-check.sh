#!/usr/bin/env bash
# The checked-in kustomize overlays (deploy/k8s/) build, with the real kubectl, to the
# same objects `predict-buy render` prints for the same release: for every overlay,
# `kubectl kustomize deploy/k8s/overlays/ENV` and `predict-buy render TAG --env ENV`
# are parsed and compared as sets of objects keyed by kind and name (kustomize sorts
# keys and objects, so text would differ where meaning does not).
# Usage: kustomize-check.sh PREDICT_BUY_BINARY [KUBECTL]  (KUBECTL defaults to
# $PREDICT_BUY_KUBECTL, which .ci/run exports).
set -euo pipefail
cd "$(dirname "$0")/.."

pb="${1:?usage: kustomize-check.sh PREDICT_BUY_BINARY [KUBECTL]}"
kubectl="${2:-${PREDICT_BUY_KUBECTL:?set PREDICT_BUY_KUBECTL or pass kubectl}}"
config=deploy/k8s/predict-buy.example.yaml
release=deploy/k8s/release.example.json

venv="$PWD/.ci/.tools/venv"
if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  # lint.sh owns the venv's pins; PyYAML comes with its yamllint, this is the fallback.
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check pyyaml==6.0.3
fi

tag="$(jq -r .tag "$release")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
overlays=(deploy/k8s/overlays/*/)
[ "${#overlays[@]}" -gt 0 ] && [ -d "${overlays[0]}" ] || {
  echo "no overlays under deploy/k8s/overlays" >&2
  exit 1
}
for dir in "${overlays[@]}"; do
  env="$(basename "$dir")"
  "$kubectl" kustomize "$dir" >"$work/$env.kustomize.yaml"
  # A clean environment: the registry and project come from the example config only.
  env -u PREDICT_BUY_REGISTRY "$pb" render "$tag" --env "$env" --config "$config" \
    --release-file "$release" >"$work/$env.render.yaml"
  "$venv/bin/python" - "$env" "$work/$env.kustomize.yaml" "$work/$env.render.yaml" <<'PY'
import sys
import yaml

env, built_path, rendered_path = sys.argv[1:]


def objects(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    out = {}
    for d in docs:
        key = (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        if key in out:
            sys.exit(f"{path}: {key} appears twice")
        out[key] = d
    return out


def differences(a, b, path=""):
    """Paths where two parsed YAML values differ, for a readable failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                yield f"{path}/{k}: {'missing in kustomize' if k not in a else 'missing in render'}"
            else:
                yield from differences(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}/{i}")
    elif a != b:
        yield f"{path}: kustomize {a!r} != render {b!r}"


built, rendered = objects(built_path), objects(rendered_path)
problems = []
for key in sorted(set(built) | set(rendered)):
    if key not in built:
        problems.append(f"{key}: rendered but not in the overlay")
    elif key not in rendered:
        problems.append(f"{key}: in the overlay but not rendered")
    else:
        problems += [f"{key}{d}" for d in differences(built[key], rendered[key])]
if problems:
    print(f"overlays/{env} differs from `predict-buy render --env {env}`:", *problems, sep="\n  ", file=sys.stderr)
    print("hint: UPDATE_K8S=1 cargo test -p predict-buy --test render_kustomize", file=sys.stderr)
    sys.exit(1)
print(f"overlays/{env}: {len(built)} objects, the same as render ({', '.join(k for k, _, _ in sorted(built))})")
PY
done
