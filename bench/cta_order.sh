#!/usr/bin/env bash
# cta_order.sh: the order of a launch's CTAs. The library's grid is packs x kv heads, so
# CTAs launched together read the same kv head of different packs; a token's 8 head slices
# (256 B each, one 2 KiB row of the cache page) are fetched by CTAs far apart in time. With
# P_HEAD_MAJOR=1 (a 1-D grid, kv head fastest) the head slices of a page are requested
# together. Both orders of the leaf tile (m16n32w2s2) and the wgmma m128 tile, GQA 8, each
# checked against the CPU reference, then timed with L2 flushed before every run.
# Usage: bench/cta_order.sh (GPU machine; or BUILD_ONLY=1 here, carry build/order, RUN_ONLY=1)
set -u
source bench/probe_build.sh
probe() {  # name, nvcc arch flags, defines
  probe_nvcc build/order/$1 "$2" -DP_G=8 $3
}
if [ "${RUN_ONLY:-0}" != 1 ]; then
  mkdir -p build/order
  probe_headers
  rm -f build/order/*
  for o in 0 1; do
    probe leaf_o$o "-arch=sm_90" "-DP_M=16 -DP_W=2 -DP_N=32 -DP_S=2 -DP_HEAD_MAJOR=$o" &
    probe wg128_o$o "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_M=128 -DP_N=64 -DP_S=3 -DP_HEAD_MAJOR=$o" &
  done
  wait
fi
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0
# binary prefix, then: queries, tokens, splits, kv heads, queries a pack (timed, no all-share, flush)
for w in "leaf 2048 32 1 8 1" "leaf 256 32 1 8 1" "leaf 1024 64 1 8 1" "wg128 256 256 1 8 16" "wg128 256 2048 1 8 16"; do
  set -- $w
  echo "== $w"
  for o in 0 1; do
    timeout 120 build/order/$1_o$o $2 $3 $4 $5 $6 1 0 1 | sed "s|^|$1_o$o: |"
  done
done
