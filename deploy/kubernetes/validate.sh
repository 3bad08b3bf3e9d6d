#!/usr/bin/env bash
# Validates deploy/kubernetes/*.yaml offline: against the Kubernetes OpenAPI schemas, strictly
# (unknown fields are errors), for Kubernetes 1.29 (the first with native sidecars) and the
# validator's newest, with `kubernetes-validate` from PyPI (it ships the schemas: no cluster,
# no network at validation time); then the agents' configs embedded in the ConfigMaps go
# through `nerve/synapse --check-config`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${KUBE_VALIDATE_VENV:-$repo/target/kubernetes-validate}
version=1.37.0
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$version"
fi
manifests=("$repo"/deploy/kubernetes/*.yaml)
for k8s in 1.29.0 ""; do
  "$venv/bin/kubernetes-validate" --strict --quiet ${k8s:+-k "$k8s"} "${manifests[@]}"
done
echo "validate: ${manifests[*]#"$repo/"} match the Kubernetes 1.29 and current schemas (strict)"

# The agents' configs inside the ConfigMaps.
target=${CARGO_TARGET_DIR:-$repo/target}
bin=$target/release
[ -x "$bin/nerve" ] && [ -x "$bin/synapse" ] || bin=$target/debug
[ -x "$bin/nerve" ] && [ -x "$bin/synapse" ] || { echo "validate: build the binaries first (cargo build --bins)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" - "$work" "${manifests[@]}" <<'PY'
import sys, yaml
out = sys.argv[1]
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "ConfigMap":
            for key, text in doc.get("data", {}).items():
                if key in ("nerve.yaml", "synapse.yaml"):
                    # The nerve container fills in the Pod IP at start.
                    open(f"{out}/{doc['metadata']['name']}-{key}", "w").write(text.replace("__POD_IP__", "10.0.0.1"))
PY
found=0
for file in "$work"/*.yaml; do
  [ -e "$file" ] || continue
  found=1
  agent=nerve
  case "$file" in *synapse.yaml) agent=synapse ;; esac
  "$bin/$agent" --check-config -c "$file" | sed "s#$work/#configmap #"
done
[ "$found" = 1 ] || { echo "validate: no agent config found in the ConfigMaps" >&2; exit 1; }
