#!/usr/bin/env bash
# sass_overlap.sh: checks in the SASS of the wgmma forward kernels that the softmax's
# exponentials run while P V is on the tensor cores, i.e. that they sit between the wait for
# S (WARPGROUP.DEPBAR.LE gsb0, 0x1) and the next wait for everything (gsb0, 0x0). ptxas is
# free to hoist that second wait above them, and did in an unrolled loop (bench/NOTES.md,
# 2026-12-08 third); then the exponentials run after P V instead of beside it.
# Usage: bench/sass_overlap.sh [SPEC.yaml ...]     (default: every spec under specs/)
#        bench/sass_overlap.sh FILE.cubin|EXECUTABLE ...   (e.g. the probe builds in build/wg)
# Needs cuobjdump (the CUDA toolkit's; on a toolkit without it, the PyPI wheel
# nvidia-cuda-cuobjdump has one: CUOBJDUMP=/path/to/cuobjdump). No GPU needed.
# Prints a line per kernel: its waits for S, and the exponentials after each before the next
# full wait; exits 1 if any wgmma kernel's main loop runs none of them beside P V.
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
      bin/patgen compile "$a" --arch sm_90 --cubin-dir "$d" > "$d.log" || { cat "$d.log"; exit 1; }
      for f in "$d"/*.sm_90a.cubin; do [ -e "$f" ] && files+=("$f"); done ;;
    *) files+=("$a") ;;
  esac
done
bad=0
for f in "${files[@]}"; do
  # Per kernel function: after each wait for S, the MUFU.EX2 before the next full wait.
  "$CUOBJDUMP" -sass "$f" | awk -v file="$(basename "$f")" '
    /Function :/ { if (fn != "") report(); fn = $3; n = 0; open_ = 0; split("", ex) }
    /WARPGROUP.DEPBAR.LE gsb0, 0x1/ { open_ = 1; ex[++n] = 0; next }
    /WARPGROUP.DEPBAR.LE gsb0, 0x0/ { open_ = 0; next }
    /MUFU.EX2/ { if (open_) ex[n]++ }
    function report(   i, s, best) {
      if (n == 0) return
      s = ""; best = 0
      for (i = 1; i <= n; i++) { s = s " " ex[i]; if (ex[i] > best) best = ex[i] }
      verdict = best > 0 ? "ok" : "NONE"
      printf "%s %s: %d waits for S; exponentials beside P V after each:%s %s\n", file, fn, n, s, verdict
      if (best == 0) failed = 1
    }
    END { if (fn != "") report(); exit failed }' || bad=1
done
exit $bad
