#!/usr/bin/env bash
# Every GPU measurement the performance issue asks for, in three stages that each fit one 10-minute call
# on a lent device machine (its python3 already holds torch, h5py, scikit-image, matplotlib, tqdm):
#   bash benchmarks/device_run.sh measure      CUDA tests, profiles (eager, compiled), LRN, store reads, tiles
#   bash benchmarks/device_run.sh throughput   the puzzles/s table with one row per optimisation removed, and
#                                              the ResNet-50 jigsaw / PIRL step beside the CFN's (trunk_step.py)
#   bash benchmarks/device_run.sh precision    fp32 vs bf16 pretext curves (3 runs, full width)
# Results go to $OUT (the device tool's folder) or ./device-out; copy the tables into RESULTS.md.
set -uo pipefail
stage=${1:-measure}
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=python3

run() {  # name, command...: output to $out/name.txt and to the terminal; a failure does not stop the rest
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | grep -v -e '^USDT' -e 'profiler_st' | tee "$out/$name.txt"
}

case $stage in
measure)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpu.txt"
    run cuda_tests $py -m pytest -q -p no:cacheprovider tests/jigsaw/test_cuda.py tests/tools/caffe/test_lrn_op.py
    run profile $py benchmarks/profile_step.py --steps 10 --trace "$out/trace.json"
    run profile_compiled $py benchmarks/profile_step.py --steps 10 --compile
    run lrn $py benchmarks/lrn.py --compile
    run store_read $py benchmarks/store_read.py
    run tiles $py benchmarks/tiles.py --iters 50
    ;;
throughput)
    run throughput $py benchmarks/pretrain_throughput.py --ablate --compile --workers 16
    # the ResNet-50 jigsaw (VISSL's head) and PIRL rows beside the CFN: puzzles/s, images/s
    run trunk_step $py benchmarks/trunk_step.py --device cuda --batch 256 --steps 10 \
        --nets cfn:1:jigsaw,resnet50:1:jigsaw,resnet50:1:pirl
    ;;
precision)
    run precision $py benchmarks/precision_agreement.py --iters "${ITERS:-3000}" --out /tmp/precision
    cp /tmp/precision/agreement.csv /tmp/precision/agreement.png "$out"/ 2>/dev/null
    ;;
*)
    echo "usage: $0 measure|throughput|precision" >&2
    exit 2
    ;;
esac
