#!/usr/bin/env bash
# promtool (Debian's prometheus package) for the monitoring tests: it parses the broker's
# /metrics output and checks and unit-tests the shipped alert rules.
set -euo pipefail
if ! command -v promtool >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
fi
promtool --version | head -1
