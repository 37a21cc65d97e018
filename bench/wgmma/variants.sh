#!/usr/bin/env bash
# variants.sh: builds wgmma probe variants (name:defines) into build/wg for one device call.
# Usage: bench/wgmma/variants.sh "plain:-DP_OVERLAP=0" "ov_s4:-DP_S=4" ...
set -u
mkdir -p build/probe/pat build/wg
cp templates/device/*.cuh build/probe/pat/ && cp templates/device/pat_params.h build/probe/pat/params.h
for v in "$@"; do
  n=${v%%:*}; f=${v#*:}
  ( nvcc -std=c++17 -O2 -gencode arch=compute_90a,code=sm_90a -Ibuild/probe -Ibench -Ibench/wgmma $f \
      bench/wgmma/wgmma_probe.cu -o build/wg/wgmma_$n -Xptxas -v 2>&1 | grep -E 'error|registers|spill' |
      sed "s/^/$n: /" ) &
done
wait
