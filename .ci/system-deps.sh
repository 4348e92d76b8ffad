#!/usr/bin/env bash
# System components the integration tests start themselves: redis-server (Debian),
# the Pub/Sub and Bigtable emulators (Google Cloud SDK) and Java for the former.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
sdk_root() { gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true; }

missing=()
have redis-server || missing+=(redis-server)
have java || missing+=(default-jre-headless)
have envsubst || missing+=(gettext-base) # infra/k8s/render.sh

if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing ${missing[*]} from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}'" \
      "(integration tests that need them will be skipped)"
  fi
fi

if ! have gcloud; then
  echo "gcloud not found: install the Google Cloud SDK with its pubsub-emulator and" \
    "bigtable components (integration tests that need them will be skipped)"
elif [ ! -x "$(sdk_root)/platform/bigtable-emulator/cbtemulator" ] && ! have cbtemulator; then
  echo "cbtemulator not found: gcloud components install bigtable" \
    "(or apt-get install google-cloud-cli-bigtable-emulator)"
fi
