#!/usr/bin/env bash
# sass_overlap.sh: checks in the SASS of the wgmma forward kernels that the softmax's
# exponentials run while P V is on the tensor cores, i.e. that they sit between the wait for
# S (WARPGROUP.DEPBAR.LE gsb0, 0x1) and the next wait for everything (gsb0, 0x0). ptxas is
# free to hoist that second wait above them, and did in an unrolled loop (bench/NOTES.md,
# 2026-12-08 third); then the exponentials run after P V instead of beside it.
# Usage: bench/sass_overlap.sh [SPEC.yaml ...]     (default: every spec under specs/)
#        bench/sass_overlap.sh FILE.cubin|EXECUTABLE ...   (e.g. the probe builds in build/wg)
# PATGEN: the patgen to compile with (default bin/patgen; build/gpu/patgen in a bundle).
# Needs cuobjdump (the CUDA toolkit's; on a toolkit without it, the PyPI wheel
# nvidia-cuda-cuobjdump has one: CUOBJDUMP=/path/to/cuobjdump). No GPU needed.
# Prints a line per kernel: the exponentials after each wait for S before the next full wait,
# and the main loop's length and most frequent instructions (a step's issue slots); exits 1
# if a wgmma kernel runs none of its exponentials beside P V.
set -u
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || echo "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump")}
if [ ! -x "$CUOBJDUMP" ]; then
  echo "sass_overlap: no cuobjdump (set CUOBJDUMP=...; pip download nvidia-cuda-cuobjdump has one)" >&2
  exit 2
fi
files=()
if [ $# = 0 ]; then set -- specs/*.yaml; fi
for a in "$@"; do
  case "$a" in
    *.tune.*.yaml | *.tune.yaml) ;;
    *.yaml)
      d=build/sass/$(basename "$a" .yaml)
      rm -rf "$d" && mkdir -p "$d"
      ${PATGEN:-bin/patgen} compile "$a" --arch sm_90 --cubin-dir "$d" > "$d.log" || { cat "$d.log"; exit 1; }
      for f in "$d"/*.sm_90a.cubin; do [ -e "$f" ] && files+=("$f"); done ;;
    *) files+=("$a") ;;
  esac
done
bad=0
for f in "${files[@]}"; do
  "$CUOBJDUMP" -sass "$f" | python3 bench/sass_loop.py "$(basename "$f")" || bad=1
done
exit $bad
