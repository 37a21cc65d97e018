#!/usr/bin/env bash
# run.sh: builds the wgmma probe and the mma.sync m128 probe (kernel_probe.cu, the default
# spec's m128n64w8s2 tile) and runs both on the same GQA-8 workloads: each checked against
# the CPU reference first, then timed. Usage: bench/wgmma/run.sh (GPU machine, or build here
# and carry build/wg: BUILD_ONLY=1 bench/wgmma/run.sh).
set -u
mkdir -p build/probe/pat build/wg
cp templates/device/*.cuh build/probe/pat/ && cp templates/device/pat_params.h build/probe/pat/params.h
nvcc -std=c++17 -O2 -gencode arch=compute_90a,code=sm_90a -Ibuild/probe -Ibench -Ibench/wgmma \
  bench/wgmma/wgmma_probe.cu -o build/wg/wgmma_probe -Xptxas -v 2>&1 | grep -E 'error|registers|spill' &
nvcc -std=c++17 -O2 -arch=sm_90 -Ibuild/probe -DP_G=8 -DP_M=128 -DP_W=8 -DP_N=64 -DP_S=2 \
  bench/kernel_probe.cu -o build/wg/mma_probe 2>&1 | grep -E 'error' &
wait
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0
for w in "512 256 8 16" "256 2048 8 16" "200 777 8 13"; do
  set -- $w
  echo "== $w"
  build/wg/wgmma_probe $1 $2 $3 $4 1
  build/wg/mma_probe $1 $2 1 $3 $4 1 | sed 's/^probe /mma.sync /'
done
