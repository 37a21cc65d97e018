#!/usr/bin/env bash
# probe_sweep.sh: builds kernel_probe.cu for several tile variants (in parallel) and times each
# on the workloads it is meant for; every run is checked against the CPU reference first.
# Usage: bench/probe_sweep.sh [ARCH]   (GPU machine; ARCH defaults to sm_90)
# A variant is "name|defines|workloads"; a workload is "queries len splits kv_heads per_pack".
set -u
arch=${1:-sm_90}
source bench/probe_build.sh
mkdir -p bin/probe
probe_headers
big="512 256 1 8 16;256 2048 1 8 16"
mid="512 256 1 8 8;256 2048 1 8 8"
leaf="256 64 1 8 1;2048 32 1 8 1"
# P_WM: warps along the rows (default M/16, 16 rows a warp); M/P_WM = 32 is a warp_rows: 32 tile.
variants=(
  "m128w8n64s2|-DP_M=128 -DP_W=8 -DP_N=64 -DP_S=2|$big"
  "m128w4n32s3r32|-DP_M=128 -DP_W=4 -DP_WM=4 -DP_N=32 -DP_S=3|$big"
  "m128w4n32s2r32|-DP_M=128 -DP_W=4 -DP_WM=4 -DP_N=32 -DP_S=2|$big"
  "m128w8n64s2r32|-DP_M=128 -DP_W=8 -DP_WM=4 -DP_N=64 -DP_S=2|$big"
  "m64w8n64s3|-DP_M=64 -DP_W=8 -DP_N=64 -DP_S=3|$mid"
  "m64w4n64s3r32|-DP_M=64 -DP_W=4 -DP_WM=2 -DP_N=64 -DP_S=3|$mid"
  "m64w2n32s3r32|-DP_M=64 -DP_W=2 -DP_WM=2 -DP_N=32 -DP_S=3|$mid"
  "m16w2n32s2|-DP_M=16 -DP_W=2 -DP_N=32 -DP_S=2|$leaf"
)
for v in "${variants[@]}"; do
  IFS='|' read -r name defs _ <<< "$v"
  { probe_nvcc bin/probe/$name -arch=$arch -DP_G=${G:-8} $defs > /dev/null || echo "build failed: $name"; } &
done
wait
for v in "${variants[@]}"; do
  IFS='|' read -r name defs works <<< "$v"
  regs=$(grep -A3 "entry function 'fwd'" bin/probe/$name.ptxas | grep -o 'Used [0-9]* registers' | grep -o '[0-9]*')
  spill=$(grep -A2 "entry function 'fwd'" bin/probe/$name.ptxas | grep -o '[0-9]* bytes spill stores')
  echo "== $name ($defs): ${regs:-?} registers, ${spill:-no spill info}"
  IFS=';' read -ra ws <<< "$works"
  for w in "${ws[@]}"; do bin/probe/$name $w 1 | sed 's/^probe /  /'; done
done
