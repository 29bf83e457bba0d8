#!/usr/bin/env bash
# Create ./.venv-moto with a local S3 server (moto) for tests/test_s3.py.
# Its own venv: moto[server] pins a botocore that aiobotocore (s3fs) in .venv rejects.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MOTO_VERSION=${MOTO_VERSION:-5.2.5}
if [ -x .venv-moto/bin/moto_server ] && .venv-moto/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; then
    echo "S3 test server ready: moto $MOTO_VERSION (.venv-moto)"
    exit 0
fi
[ -x .venv-moto/bin/python ] || "$PYTHON" -m venv .venv-moto
.venv-moto/bin/python -m pip install -q --upgrade pip
.venv-moto/bin/python -m pip install -q "moto[server]==$MOTO_VERSION"
echo "S3 test server ready: moto $(.venv-moto/bin/python -c 'import moto; print(moto.__version__)') (.venv-moto/bin/moto_server)"
