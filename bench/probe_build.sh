# probe_build.sh: sourced by the probe scripts (probe.sh, probe_sweep.sh, cta_order.sh,
# wgmma/run.sh) to build bench/kernel_probe.cu against the library's device headers.

# Stages templates/device/ under build/probe/pat/ as NVRTC sees it (pat_params.h -> params.h).
probe_headers() {
  mkdir -p build/probe/pat
  cp templates/device/*.cuh build/probe/pat/ && cp templates/device/pat_params.h build/probe/pat/params.h
}
# probe_headers_at REF: the same headers as git commit REF has them, under build/probe_REF/pat/
# (a baseline to build beside the working tree's: probe_nvcc ... -Ibuild/probe_REF).
probe_headers_at() {
  local d=build/probe_$1/pat f
  mkdir -p $d
  for f in $(git ls-tree --name-only "$1" templates/device/); do
    git show "$1:$f" > $d/$(basename $f) || return 1
  done
  mv $d/pat_params.h $d/params.h
}

# probe_nvcc OUT ARCH_FLAGS [DEFINES...]: builds the probe into OUT, ptxas's report into
# OUT.ptxas; prints its errors, registers, spills and serialisation warnings (C75xx) prefixed
# with OUT's name. Returns nvcc's status.
probe_nvcc() {
  local out=$1 arch=$2
  shift 2
  nvcc -std=c++17 -O2 $arch "$@" -Ibuild/probe -Ibench bench/kernel_probe.cu -o "$out" -Xptxas -v \
    > "$out.ptxas" 2>&1
  local rc=$?
  grep -E 'error|registers|spill|C75' "$out.ptxas" | sed "s|^|$(basename "$out"): |"
  return $rc
}
