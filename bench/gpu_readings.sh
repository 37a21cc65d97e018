#!/usr/bin/env bash
# gpu_readings.sh: the first performance and JIT readings, on the GPU machine from the
# bundle of `make gpu-bundle`: cold and warm context creation, the no-sharing workloads in
# direct and prefix mode (32/8 heads) against the copy bandwidth, and compute-sanitizer
# memcheck and racecheck on a small GPU test. Log in ${OUT:-build}/readings.log.
set -u
export LD_LIBRARY_PATH=$PWD/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
log=${OUT:-build}/readings.log
{
  nvidia-smi --query-gpu=name --format=csv,noheader
  cold=$(mktemp -d)
  echo "== JIT: paper spec (49 kernels), cold cache then warm"
  PAT_CACHE_DIR=$cold build/gpu/patgen run specs/paper.yaml --tree 1,4_256,64 --iters 10 | grep -E "context|prefix |direct "
  PAT_CACHE_DIR=$cold build/gpu/patgen run specs/paper.yaml --tree 1,4_256,64 --iters 10 | grep context
  echo "== per-kernel cold NVRTC compile (one thread)"
  build/gpu/patgen compile specs/default.yaml --arch sm_90 | tail -4
  for tree in 256_1024 256_4096 1,10_4096,416 1,8,512_32,512,256 1,1024_2048,32; do
    echo "== $tree 32/8 (default spec)"
    build/gpu/patgen run --tree $tree --heads 32/8 --iters 100 | grep -E "workload|prefix |direct |faster"
  done
  echo "== compute-sanitizer"
  for tool in memcheck racecheck; do
    PAT_CACHE_DIR=$cold compute-sanitizer --tool $tool --print-limit 10 build/gpu/tests --filter 'gpu/two_contexts_side_by_side' -j1 2>&1 | tail -4
  done
} 2>&1 | tee "$log"
