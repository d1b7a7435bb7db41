#!/usr/bin/env bash
# kafka-python, a client nobody here wrote, for the broker's integration tests that drive it
# from Python (broker/tests/python/). The newest 2.x, pinned; installs only when another version
# (or none) is there, so running it again, or after another script installed it, is harmless.
set -euo pipefail
want=2.3.3
have=$(python3 -c 'import kafka; print(kafka.__version__)' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "kafka-python==$want"
fi
python3 -c 'import kafka; print("kafka-python", kafka.__version__)'
