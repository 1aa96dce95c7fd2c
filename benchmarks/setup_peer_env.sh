#!/usr/bin/env bash
# The benchmarks' own environment: fewray + the peer (easyfsl), which needs torchvision, hence the
# PyPI torch build (the +cpu wheel cannot load torchvision, see ../shared/STACK.md). easyfsl is not
# a dependency of fewray.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-benchmarks/.venv-peer}
python3 -m venv "$VENV"
grep -v '^torch==' constraints.txt > "$VENV/constraints-peer.txt"
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints-peer.txt" \
    'torch===2.13.0' 'torchvision==0.28.0' 'easyfsl==1.5.0' -e .
"$VENV/bin/python" -c "import torch, torchvision, easyfsl.utils; print('peer env ok', torch.__version__, torchvision.__version__)"
