#!/usr/bin/env bash
# Run HERE (the CPU machine, which reaches PyPI) before a device call: the GPU machine has no webdataset, which
# timm's wds datasets (training and validating from shards) import, nor simplejpeg (CPU decoding of the shards;
# without it PIL decodes them, the same pixels more slowly). Downloads their wheels into .whl/ (ignored by git
# through .git/info/exclude); carry `.whl` in the device call, and scripts/gpu_check.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl webdataset==1.0.2 braceexpand==0.1.7 \
    simplejpeg==1.9.0
ls -l .whl
