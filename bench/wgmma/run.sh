#!/usr/bin/env bash
# run.sh: the library's m128 forward kernel on mma.sync (decode.cuh) and on wgmma
# (decode_wgmma.cuh), both through bench/kernel_probe.cu, on the same GQA-8 workloads: each
# checked against the CPU reference first, then timed. Extra name:defines arguments build
# more wgmma variants (e.g. "n128:-DP_N=128" "s4:-DP_S=4").
# Usage: bench/wgmma/run.sh [name:defines ...]   (GPU machine; or build here and carry
#        build/wg: BUILD_ONLY=1 bench/wgmma/run.sh ...; RUN_ONLY=1 runs what build/wg has)
#        BASE_REF=COMMIT also builds wgmma_base: the wgmma kernel with the headers of COMMIT.
# The producer-warpgroup experiment (decode_wgmma_ws.cuh, kernel_probe -DP_WGMMA=2) ran once
# and was not faster (bench/NOTES.md); it is in git history at f013a72. wgmma_tma*: the same
# kernel with its K/V copies issued by the tensor memory accelerator (kv_tma.cuh); wgmma_pp*:
# the two warpgroups taking turns on the tensor cores (decode_wgmma_pp.cuh).
# The first version of this experiment (a standalone kernel with the plain and overlapped
# loops and a no-load diagnostic) is in git history (b6827df); its readings: bench/NOTES.md.
set -u
source bench/probe_build.sh
probe() {  # name, nvcc arch flags, defines (128 rows unless they set P_M)
  local m=-DP_M=128
  case "$3" in *-DP_M=*) m= ;; esac
  probe_nvcc build/wg/$1 "$2" -DP_G=8 $m $3
}
if [ "${RUN_ONLY:-0}" != 1 ]; then
  mkdir -p build/wg
  probe_headers
  rm -f build/wg/*
  probe mma_sync "-arch=sm_90" "-DP_W=8 -DP_N=64 -DP_S=2" &
  probe wgmma "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_N=64 -DP_S=3 -DP_QREG=0" &
  # S's A operand (Q) from registers (C::Q_IN_REGS; the library's tiles keep it in shared memory)
  probe wgmma_qregs "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_N=64 -DP_S=3 -DP_QREG=1" &
  # a step's K/V copies issued after its GEMMs (C::LATE_LOAD), at three and four stages
  probe wgmma_late "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_N=64 -DP_S=3 -DP_QREG=0 -DP_LATE=1" &
  probe wgmma_late_s4 "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_N=64 -DP_S=4 -DP_QREG=0 -DP_LATE=1" &
  # O rescaled only when a row's max grows past a slack (C::LAZY_RESCALE), alone and with LATE_LOAD
  probe wgmma_lazy "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_N=64 -DP_S=3 -DP_QREG=0 -DP_LAZY=1" &
  probe wgmma_late_lazy "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_N=64 -DP_S=3 -DP_QREG=0 -DP_LATE=1 -DP_LAZY=1" &
  if [ -n "${BASE_REF:-}" ]; then  # the wgmma kernel as commit BASE_REF has it
    probe_headers_at "$BASE_REF" &&
      probe wgmma_base "-gencode arch=compute_90a,code=sm_90a" "-Ibuild/probe_$BASE_REF -DP_WGMMA=1 -DP_N=64 -DP_S=3 -DP_QREG=0" &
  fi
  # 64 rows (one warpgroup) a CTA, two CTAs an SM (113 KB of shared memory each): the two
  # warpgroups of an SM no longer wait for each other at the ring's barrier. The workloads
  # below give these builds half the queries a pack (twice the CTAs).
  probe wgmma_m64 "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_M=64 -DP_N=64 -DP_S=3 -DP_QREG=0" &
  # K/V by TMA (bench/wgmma/kv_tma.cuh): the library's stages, and one more
  probe wgmma_tma "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=3 -DP_N=64 -DP_S=3 -DP_QREG=0" &
  probe wgmma_tma_s4 "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=3 -DP_N=64 -DP_S=4 -DP_QREG=0" &
  # the two warpgroups taking turns (decode_wgmma_pp.cuh; TMA loads), Q in shared memory or registers
  probe wgmma_pp "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=4 -DP_N=64 -DP_S=3 -DP_QREG=0" &
  probe wgmma_pp_qregs "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=4 -DP_N=64 -DP_S=3 -DP_QREG=1" &
  probe wgmma_pp_s4 "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=4 -DP_N=64 -DP_S=4 -DP_QREG=1" &
  for v in "$@"; do
    probe "wgmma_${v%%:*}" "-gencode arch=compute_90a,code=sm_90a" "-DP_WGMMA=1 -DP_N=64 -DP_S=3 -DP_QREG=0 ${v#*:}" &
  done
  wait
fi
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0
# queries, tokens, kv heads, queries a pack, all packs share the pages
# A build that overruns its time (a hang) is dropped from the later workloads.
builds=$(ls build/wg/* | grep -v '\.ptxas$')
for w in "200 777 8 13 0" "512 256 8 16 0" "256 2048 8 16 0" "64 4096 8 16 0" "1024 2048 8 16 1"; do
  set -- $w
  echo "== $w"
  for b in $builds; do
    q=$4; case $b in *_m64*) q=$(( ($4 + 1) / 2 )) ;; esac  # 64-row builds: 8 queries x GQA 8 at most
    timeout ${RUN_S:-60} $b $1 $2 1 $3 $q 1 $5 | sed "s|^|${b#build/wg/}: |"
    [ "${PIPESTATUS[0]}" = 124 ] && echo "${b#build/wg/}: TIMEOUT, dropped" && builds=$(echo "$builds" | grep -vx "$b")
  done
done
