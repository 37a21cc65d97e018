#!/usr/bin/env bash
# probe.sh: builds bench/kernel_probe.cu for a few tile shapes and runs each (GPU machine).
# Usage: bench/probe.sh [ARCH]   (ARCH defaults to sm_90)
set -u
arch=${1:-sm_90}
source bench/probe_build.sh
mkdir -p bin/probe
probe_headers
fail=0
build() {  # name defines...
  local name=$1; shift
  probe_nvcc bin/probe/$name -arch=$arch "$@"
}
build d128_m16w4 -DP_M=16 -DP_W=4 -DP_N=64 -DP_S=3 &
build d128_m64w4 -DP_M=64 -DP_W=4 -DP_N=64 -DP_S=2 &
build d128_m16w1 -DP_M=16 -DP_W=1 -DP_N=32 -DP_S=2 &
build d128_g7 -DP_M=16 -DP_W=4 -DP_N=64 -DP_S=3 -DP_G=7 -DP_PAGE=16 &
build d64_m32w2 -DP_D=64 -DP_M=32 -DP_W=2 -DP_N=64 -DP_S=3 &
build d256_m16w4 -DP_D=256 -DP_M=16 -DP_W=2 -DP_N=32 -DP_S=2 -DP_G=8 &
wait
run() { echo "+ $*"; "$@" || fail=1; }
run bin/probe/d128_m16w4 64 1000 1 8 1
run bin/probe/d128_m16w4 64 1000 5 8 1
run bin/probe/d128_m16w4 16 77 1 8 1
run bin/probe/d128_m16w4 40 333 3 8 4
run bin/probe/d128_m64w4 64 1000 1 8 16
run bin/probe/d128_m64w4 61 1000 4 8 16
run bin/probe/d128_m16w1 33 517 2 8 4
run bin/probe/d128_g7 30 400 3 4 2
run bin/probe/d64_m32w2 64 999 2 8 8
run bin/probe/d256_m16w4 16 700 2 4 2
echo "== timing: direct, 256 queries x 4096 tokens, 8 kv heads"
run bin/probe/d128_m16w4 256 4096 1 8 1 1
run bin/probe/d128_m16w4 256 1024 1 8 1 1
run bin/probe/d128_m16w4 256 1024 2 8 1 1
exit $fail
