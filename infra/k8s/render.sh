#!/usr/bin/env bash
# Print the manifests of this folder with their dollar-brace variables filled from an env file
# (terraform output -raw k8s_env). Only the variables the file defines are
# substituted, and a variable a manifest uses but the file lacks is an error.
#
#   infra/k8s/render.sh infra/generated/k8s.env | kubectl apply -f -
set -euo pipefail
env_file=${1:?usage: render.sh ENV_FILE}
here=$(cd "$(dirname "$0")" && pwd)
manifests=("$here"/namespace.yaml "$here"/tfserving.yaml "$here"/recommender.yaml)

set -a
# shellcheck disable=SC1090
. "$env_file"
set +a

names=$(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' "$env_file")
used=$(grep -ho '\${[A-Z_][A-Z0-9_]*}' "${manifests[@]}" | sort -u | tr -d '${}')
for name in $used; do
  grep -qx "$name" <<<"$names" || { echo "render.sh: $name is not set in $env_file" >&2; exit 1; }
done

shell_format=$(printf '${%s} ' $names)
for manifest in "${manifests[@]}"; do
  echo "---"
  envsubst "$shell_format" <"$manifest"
done
