#!/usr/bin/env bash
# The GPU path, checked on a machine with an NVIDIA GPU (issue 11): installs the `gpu`
# extra, checks that onnxruntime sees CUDA, runs the model pack on CUDA against CPU
# (same faces, embeddings within cosine 0.999; bench/gpu_parity.py), then indexes with
# bench/ingest.py so that sampled frames/s and faces/s per GPU can go into BENCHMARKS.md.
#
#   bash scripts/gpu-check.sh [out-dir]        # default bench-out/gpu; ~5 min on one GPU
#
# Needs package-registry access for the install (or a wheel folder in PIP_FIND_LINKS with
# onnxruntime-gpu and the project's dependencies). Not run yet: no session has had a GPU
# machine that can take onnxruntime-gpu (BENCHMARKS.md, "The GPU path").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench-out/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

python3 -m venv .venv-gpu
. .venv-gpu/bin/activate
pip install -q --upgrade pip
pip install -q -e '.[gpu]'
pip uninstall -q -y onnxruntime 2>/dev/null || true # the CPU build shadows the GPU one
pip install -q --force-reinstall --no-deps 'onnxruntime-gpu>=1.31,<1.32'

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import onnxruntime as ort; p = ort.get_available_providers(); print(p); assert 'CUDAExecutionProvider' in p" | tee -a "$OUT/gpu.txt"

python bench/gpu_parity.py --pack yunet-sface --frames 300 --out "$OUT" | tee "$OUT/parity.log"
if [ -d "$(python -c 'from pipelines.config import load_settings; print(load_settings().models.insightface_root)')/buffalo_l" ]; then
  python bench/gpu_parity.py --pack buffalo_l --frames 300 --out "$OUT/buffalo_l" | tee "$OUT/parity-buffalo_l.log"
fi

# Ingest on CUDA against CPU, same video: models alone, then the Ray Data pipeline.
for providers in cpu cuda; do
  FACEREEL_MODELS__PROVIDERS=$providers python bench/ingest.py --duration 60 \
    --variants models,pipeline --out "$OUT/ingest-$providers" | tee "$OUT/ingest-$providers.log"
done
echo "results in $OUT"
