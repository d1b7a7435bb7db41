#!/usr/bin/env bash
# kcat (librdkafka's command-line client) for the broker's integration tests.
set -euo pipefail
if ! command -v kcat >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat
fi
kcat -V | head -1
