#!/usr/bin/env bash
# The libraries kafka-python uses for compressed batches and CRCs, for the broker's kafka-python
# compatibility tests (broker/tests/python/clients_test.py). kafka-python imports each one
# optionally and, without it, refuses that codec (or computes CRC-32C in pure Python):
#   python-snappy  `import snappy` (0.7 wraps cramjam, a prebuilt wheel; no libsnappy needed)
#   lz4            `import lz4.frame`
#   zstandard      `import zstandard`
#   crc32c         native CRC-32C; pure Python takes seconds over a 1 MiB batch
# Pinned; pip installs only what is missing or at another version, so running it again is
# harmless. Ends by asking kafka-python itself which codecs it has.
set -euo pipefail
packages=(python-snappy==0.7.3 lz4==4.4.5 zstandard==0.25.0 crc32c==2.9.post0)
missing=()
for spec in "${packages[@]}"; do
  name=${spec%%==*}
  want=${spec#*==}
  have=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ "$have" != "$want" ]; then
    missing+=("$spec")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${missing[@]}"
fi
python3 - <<'EOF'
from kafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from kafka.record.util import calc_crc32c
from kafka.record import util

have = {"gzip": has_gzip(), "snappy": has_snappy(), "lz4": has_lz4(), "zstd": has_zstd()}
missing = [codec for codec, ok in have.items() if not ok]
if missing:
    raise SystemExit("kafka-python lacks codecs: %s" % ", ".join(missing))
if util._crc32c is util.crc32c_py:
    raise SystemExit("kafka-python uses its pure-Python CRC-32C: the crc32c package did not load")
assert calc_crc32c(b"123456789") == 0xE3069283
print("kafka-python codecs: " + ", ".join(sorted(have)) + "; native CRC-32C")
EOF
