#!/usr/bin/env bash
# gpu_run.sh: runs the GPU test suite, the default job and the C example from the bundle that
# `make gpu-bundle` leaves in build/gpu (see tests/README.md). Run it on the GPU machine,
# from the repository root; the log goes to stdout and to ${OUT:-build}/gpu_tests.log.
set -u -o pipefail
log=${OUT:-build}/gpu_tests.log
export LD_LIBRARY_PATH=$PWD/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PAT_CACHE_DIR=${PAT_CACHE_DIR:-$PWD/build/gpu_cache}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  status=0
  build/gpu/tests --filter "${1:-gpu*}" --verbose -j "${JOBS:-8}" 2>&1 | grep -v '^\[----\]   $' || status=1
  build/gpu/tests --filter 'driver/*' 2>&1 | tail -1 || status=1
  echo "== patgen run (the default job)"
  build/gpu/patgen run || status=1
  if [ -x build/gpu/decode_step ]; then
    echo "== the C example (examples/decode_step.c)"
    build/gpu/decode_step || status=1
  fi
  if [ -z "${1:-}" ]; then
    echo "== Python binding on the GPU"
    PAT_LIBRARY=$PWD/build/gpu/libpat.so python3 -m pytest python/tests -q -rs -p no:cacheprovider || status=1
  fi
  exit $status
} 2>&1 | tee "$log"
