#!/usr/bin/env bash
# Create ./.venv and install facereel with its test tools (offline-capable afterwards), and
# ./.venv-moto with the local S3 server the storage and cluster tests start (README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,notebooks]'
# The notebooks' kernel is this venv's python (nbclient and `jupyter lab notebooks/`).
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name 'Python 3 (facereel)' > /dev/null
# insightface depends on opencv-python (GUI build, needs libGL), which overwrites the
# headless cv2 package: put the headless build back. insightface keeps importing.
.venv/bin/python -m pip uninstall -q -y opencv-python || true
.venv/bin/python -m pip install -q --force-reinstall --no-deps 'opencv-python-headless>=5,<6'
.venv/bin/python -c "import cv2, insightface, onnxruntime, ray, lancedb; print('facereel environment ready: cv2', cv2.__version__, '| ray', ray.__version__, '| lancedb', lancedb.__version__)"
# The local S3 server (moto) that the S3, bring-your-own-storage, cluster and retention tests start,
# so none of them skips: its own venv, installed once (the script returns at once when it is there).
bash scripts/setup-s3-test-server.sh
