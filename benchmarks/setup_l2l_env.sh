#!/usr/bin/env bash
# learn2learn's own environment for benchmarks/maml_speed.py --l2l-python (learn2learn is not a dependency of fewray).
# learn2learn 0.2.0 is an sdist whose C files (Cython 0.29.24) do not compile on Python 3.11 ("longintrepr.h: No such
# file"): the .pyx sources are re-cythonized with Cython 0.29.37 (timestamps touched, no source changed). torch,
# torchvision, numpy and scipy come from the repository's .venv through a .pth file (appended last on sys.path).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(realpath -m "${VENV:-benchmarks/.venv-l2l}")
MAIN_SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "cython<3" wheel
SRC=$(mktemp -d)
"$VENV/bin/pip" download -q --no-deps --no-binary :all: learn2learn==0.2.0 -d "$SRC"
tar xzf "$SRC/learn2learn-0.2.0.tar.gz" -C "$SRC"
(cd "$SRC/learn2learn-0.2.0" && touch learn2learn/data/*.pyx learn2learn/data/*.pxd &&
 "$VENV/bin/python" setup.py -q build_ext bdist_wheel -d "$SRC/dist" >/dev/null)
"$VENV/bin/pip" install -q --no-deps "$SRC"/dist/learn2learn-0.2.0-*.whl gym==0.26.2 gym_notices
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$MAIN_SITE" > "$SITE/zz_main_venv.pth"
"$VENV/bin/python" -c "import torch, learn2learn; print('l2l env ok', torch.__version__, learn2learn.__version__)" 2>/dev/null
rm -rf "$SRC"
