#!/usr/bin/env bash
# opentelemetry-proto (OpenTelemetry's own Python bindings of the OTLP protobufs) for
# broker/tests/otlp.rs, which parses the broker's trace exports with it. Pinned; installs only
# when another version (or none) is there.
set -euo pipefail
want=1.45.2
have=$(python3 -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "opentelemetry-proto==$want"
fi
python3 -c 'import importlib.metadata as m; print("opentelemetry-proto", m.version("opentelemetry-proto"))'
