#!/usr/bin/env bash
# Build dependencies of librdkafka, which rdkafka-sys compiles from source (its mklove
# ./configure and make, no cmake) for the broker's rdkafka compatibility tests:
#   build-essential  C compiler and make
#   pkg-config       how openssl-sys and libz-sys find the system libraries
#   libssl-dev       the `ssl` feature links the system OpenSSL
#   zlib1g-dev       the `libz` feature (gzip) links the system zlib
# zstd comes from the zstd-sys crate (vendored), lz4 and snappy are bundled in librdkafka.
set -euo pipefail
packages=(build-essential pkg-config libssl-dev zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
echo "rdkafka build deps: ${packages[*]} installed"
