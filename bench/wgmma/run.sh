#!/usr/bin/env bash
# run.sh: builds wgmma probe variants (variants.sh) and the mma.sync m128 probe
# (kernel_probe.cu, the default spec's m128n64w8s2 tile), then runs every build/wg binary on
# the same GQA-8 workloads: each checked against the CPU reference first, then timed.
# Usage: bench/wgmma/run.sh [name:defines ...]   (GPU machine; or build here and carry
#        build/wg: BUILD_ONLY=1 bench/wgmma/run.sh ...; RUN_ONLY=1 runs what build/wg has)
set -u
if [ "${RUN_ONLY:-0}" != 1 ]; then
  rm -f build/wg/wgmma_* build/wg/mma_probe
  bench/wgmma/variants.sh "${@:-ov:}" | grep -v C7519 &
  nvcc -std=c++17 -O2 -arch=sm_90 -Ibuild/probe -Ibench -DP_G=8 -DP_M=128 -DP_W=8 -DP_N=64 -DP_S=2 \
    bench/kernel_probe.cu -o build/wg/mma_probe 2>&1 | grep -E 'error' &
  wait
fi
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0
# queries, tokens, kv heads, queries a pack, all packs share the pages
for w in "200 777 8 13 0" "512 256 8 16 0" "256 2048 8 16 0" "64 4096 8 16 0" "1024 2048 8 16 1"; do
  set -- $w
  echo "== $w"
  for b in build/wg/wgmma_*; do
    timeout 120 $b $1 $2 $3 $4 1 $5 | sed "s|^|${b#build/wg/}: |"
  done
  timeout 120 build/wg/mma_probe $1 $2 1 $3 $4 1 $5 | sed 's/^/mma.sync: /'
done
