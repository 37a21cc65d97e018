#!/usr/bin/env bash
# device_session.sh PHASE: one GPU-machine session's readings from the bundle of
# `make gpu-bundle` (carry build/gpu; build/pylib optional: a pytest for machines without
# one). Logs go to ${OUT:-build}. Phases:
#   tests     the GPU test suites and the default job (tests/gpu_run.sh)
#   python    the Python binding's tests (GPU ones included) and the decode demo
#   patbench  all paper trees x 4 head configs, default spec
#   peers     the PyTorch peers on the same workloads (bench/peers.py); FlashInfer too when its
#             wheels are carried in .whl/ (bench/PEERS.md says how)
#   abfull    old (build/gpu_base) vs new (build/gpu) kernels: the wgmma GPU tests, the new
#             wgmma kernels' SASS (bench/sass_overlap.sh, this machine's NVRTC), build/copy_ramp
#             (bench/copy_ramp/) and the wgmma probe (build/wg) when carried, then patbench on
#             the full set (SUBSET=1: the 10-tree subset), the old bundle at BASE_ITERS (100)
#             runs a case and the new at ITERS (50); the C example (build/gpu/decode_step);
#             FlashInfer where bench/results has no reading of this GPU model and 180 s are
#             left before DEADLINE (560); the chart
#   readings  the numbers README.md quotes, for one GPU: quick suites (QUICK=0: none), patbench
#             (100 runs a case), FlashInfer (carried wheels), the chart with this GPU model's
#             peers; TUNE=1: then pattune (this GPU's table) and patbench with the table;
#             ITERS (100), FI=0 (no FlashInfer), TUNE_S (pattune's seconds, 160), DEADLINE
#             (the second the tuned patbench must end by, counted from the script's start: 560),
#             TUNE_TREES (pattune's trees, "T1;T2...": the 10-tree subset, which fits the time box),
#             TUNE_EXTRA (trees added to the subset)
#   tune      this GPU's table and the full set with it (readings' TUNE=1 step alone)
#   probes    build/copy_ramp and the wgmma probe (build/wg), whichever are carried (abfull's
#             first steps alone)
#   probe     per-kernel durations and DRAM bytes (ncu) on a few trees
#   detail    ncu's occupancy, stall and throughput sections for one run's kernels
#   ab        the quick GPU suites, then old (build/gpu_base) vs new kernels on small trees,
#             then the tile-variant sweep of bench/probe_sweep.sh
#   wgmma     the wgmma probe against the mma.sync m128 probe (bench/wgmma/run.sh)
#   order     the CTA-order experiment: both grid orders of two tiles (bench/cta_order.sh)
#   variants  the tile-variant sweep, then patbench on the default spec and on copies of it
#             whose large tiles are replaced (VARIANTS: "name:old tile=new tile;..." lines)
#   subset    the quick GPU suites, then patbench on a 10-tree subset x 4 heads: build/gpu_base
#             (old kernels, when carried), build/gpu, and every spec in SPECS (e.g. variants)
#   pdl       the quick GPU suites, then the subset with PAT_PDL=off (forked streams) and on
#   carveout  the quick carveout suite, then the subset with PAT_SMEM_CARVEOUT=default, max and
#             default again
#   leafheads 1-page leaves streamed with 1, 2, 4 or 8 kv heads a CTA (bench/leaf_heads/)
#   sass      ncu source counters (stall samples per SASS instruction) of the kernels of one
#             case (CASE, default 1,256_256,32:64/8), summarised by bench/ncu_sass_summary.py
set -u -o pipefail
out=${OUT:-build}
export LD_LIBRARY_PATH=$PWD/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PAT_CACHE_DIR=${PAT_CACHE_DIR:-$PWD/build/gpu_cache}
export PAT_LIBRARY=$PWD/build/gpu/libpat.so
py=python3
for p in python3 /opt/torch/.venv/bin/python3; do
  if $p -c 'import torch' 2>/dev/null; then py=$p; break; fi
done
$py -c 'import pytest' 2>/dev/null || export PYTHONPATH=$PWD/build/pylib
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
tag=$(echo "$gpu" | sed 's/NVIDIA //; s/ .*//' | tr 'A-Z' 'a-z')-$(date +%F)
echo "GPU: $gpu   python: $py   tag: $tag   bundle: $(cat build/gpu/SOURCE 2>/dev/null || echo '?')"

# The quick GPU suites (all but the long paper-tree sweep), failures and totals only.
quick_tests() {
  for f in 'gpu/fp16*' 'gpu/b*' 'gpu/l*' 'gpu/m*' 'gpu/page*' 'gpu/t*' 'gpu/w*' 'gpu_graph/*'; do
    timeout 150 build/gpu/tests --filter "$f" -j8 2>&1 | grep -E '^\[(FAIL|SKIP|====)\]|Assert|WRONG' | grep -v Running
  done
}
# Carried FlashInfer wheels (.whl/, bench/PEERS.md), installed beside the image's packages.
flashinfer_wheels() {
  ls .whl/*.whl >/dev/null 2>&1 || return 0
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} FLASHINFER_CUDA_ARCH_LIST=9.0a \
      FLASHINFER_WORKSPACE_BASE=/tmp/fiws
}
# This GPU's tuning table (specs/default.tune.GPU.yaml: pattune on TUNE_TREES for TUNE_S
# seconds), then the full set with it at 30 runs a case, ending by DEADLINE.
tune_table() {
  timeout ${TUNE_S:-160} build/gpu/pattune --iters 15 --trees "${TUNE_TREES:-$SUBSET_TREES${TUNE_EXTRA:+;$TUNE_EXTRA}}" 2>&1 | tee "$out/pattune-$tag.log" | grep -v "^pattune: gqa" | tail -4
  cp specs/default.tune.*.yaml "$out/"
  timeout $((${DEADLINE:-560} - SECONDS)) build/gpu/patbench --iters 30 --check 2 --out "$out/patbench-tuned-$tag.jsonl" \
    > "$out/patbench-tuned-$tag.txt" 2>&1; tail -3 "$out/patbench-tuned-$tag.txt"
}
# The copy ramp (build/copy_ramp) and the wgmma probe's builds (build/wg), whichever are
# carried; a probe build that hangs is dropped after RUN_S seconds.
carried_probes() {
  [ -x build/copy_ramp ] && timeout 60 build/copy_ramp 2>&1 | tee "$out/copy-ramp-$tag.log"
  [ -d build/wg ] && RUN_ONLY=1 RUN_S=30 timeout 180 bench/wgmma/run.sh 2>&1 | tee "$out/wgmma-$tag.log" |
    grep -E 'FAIL|median|occupancy|^==' | sed 's/ of unique KV+q+out//'
}
# Ten sharing trees, small and large, for A/B readings (x 4 head configs: 40 cases).
SUBSET_TREES="1,256_256,32;1,4,256_32,256,32;2,8,16,256_256,256,32,32;1,4,8,256_32,256,256,32;1,10_4096,416"
SUBSET_TREES="$SUBSET_TREES;1,16,32,64,128,1024_256,128,64,32,32,32;8,16,32,256_512,512,256,32;1,1024_2048,32"
SUBSET_TREES="$SUBSET_TREES;4,16,256,512_512,32,128,32;1,2,64_1024,256,256"

# Old (build/gpu_base, when carried) vs new kernels: ITERS runs of each of TREES x HEADS.
ab_trees() {
  for t in $TREES; do
    for h in ${HEADS:-16/8 64/8}; do
      for b in gpu_base gpu; do
        [ -d build/$b ] || continue
        echo "== $b $t $h: $(PAT_TUNING=off timeout 30 build/$b/patgen run --tree $t --heads $h --iters $ITERS | grep -E '^  prefix')"
      done
    done
  done
}

case "${1:-}" in
tests)
  timeout 400 tests/gpu_run.sh gpu*
  ;;
python)
  echo "== Python binding on the GPU"
  timeout 200 $py -m pytest python/tests -q -rs -p no:cacheprovider 2>&1 | tee "$out/pytest-$tag.log"
  echo "== decode demo"
  timeout 200 $py python/examples/decode_demo.py --json "$out/demo-$tag.json" 2>&1 | tee "$out/demo-$tag.log"
  ;;
patbench)
  timeout 270 build/gpu/patbench --spec specs/default.yaml --out "$out/patbench-default-$tag.jsonl" 2>&1 | tee "$out/patbench-default-$tag.txt"
  ;;
peers)
  flashinfer_wheels
  timeout 200 $py bench/peers.py --deadline-s 170 --iters 50 --out "$out/peers-$tag.jsonl" 2>&1 | tail -40 | tee "$out/peers-$tag.txt"
  ;;
probe)
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  i=0
  for t in ${TREES:-1,10_4096,416 2,8,16,256_256,256,32,32 1,1024_2048,32}; do
    for h in ${HEADS:-16/8 64/8}; do
      i=$((i + 1)); echo "== probe $i: $t $h" | tee -a "$out/probe-$tag.log"
      timeout 100 $ncu --clock-control none --csv --print-units base \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size \
        build/gpu/patgen run --tree $t --heads $h --iters 1 > "$out/probe-$tag-$i.csv" 2>&1
    done
  done
  ;;
abfull)
  timeout 90 build/gpu/tests --filter 'gpu/wgmma*' 2>&1 | grep -E '^\[(FAIL|====)\]|Assert'
  # The wgmma kernels' SASS as this machine's NVRTC builds them: softmax beside P V?
  PATGEN=build/gpu/patgen timeout 60 bench/sass_overlap.sh specs/default.yaml 2>&1 | sed 's/.cubin pat_fwd_[^:]*//' | tee "$out/sass-overlap-$tag.log"
  carried_probes
  trees=(); [ "${SUBSET:-0}" = 1 ] && trees=(--trees "$SUBSET_TREES")
  for b in gpu_base gpu; do
    [ $b = gpu_base ] && n=${BASE_ITERS:-100} || n=${ITERS:-50}
    LD_LIBRARY_PATH=$PWD/build/$b/lib timeout 200 build/$b/patbench "${trees[@]}" --iters $n --check 2 \
      --out "$out/patbench-$b-$tag.jsonl" > "$out/patbench-$b-$tag.txt" 2>&1
    echo "== $b ($(cat build/$b/SOURCE 2>/dev/null || echo '?')), $n runs a case:"; grep -E 'tuning|sharing trees|no sharing 256_4096 32/8|failures' "$out/patbench-$b-$tag.txt" | tail -5
  done
  # The C example (its kernels are in the disk cache by now), when the bundle has it.
  [ -x build/gpu/decode_step ] && timeout 60 build/gpu/decode_step 2>&1 | tee "$out/decode-step-$tag.log"
  if ! ls bench/results/peers-flashinfer-${tag%%-*}-* >/dev/null 2>&1 && [ "${FI:-1}" = 1 ] &&
    [ $SECONDS -lt $((${DEADLINE:-560} - 180)) ]; then
    flashinfer_wheels
    timeout 200 $py bench/peers.py --methods flashinfer_decode,flashinfer_cascade \
      --out "$out/peers-flashinfer-$tag.jsonl" 2>&1 | tail -6
  fi
  $py bench/chart.py "$out/chart-$tag.png" "$out/patbench-gpu_base-$tag.jsonl" bench/results/peers-*${tag%%-*}-*.jsonl \
    $(ls "$out/peers-flashinfer-$tag.jsonl" 2>/dev/null) --heads 32/8
  ;;
readings)
  # The published numbers of one GPU in one call (about 7 minutes): the quick GPU suites,
  # all trees x heads at 100 runs a case, FlashInfer when its wheels are carried, and the
  # chart with the peers already measured on this GPU model (bench/results/peers-*MODEL-*).
  [ "${QUICK:-1}" = 1 ] && quick_tests 2>&1 | tee "$out/readings-tests-$tag.log"
  timeout 300 build/gpu/patbench --iters ${ITERS:-100} --check 4 --out "$out/patbench-$tag.jsonl" \
    > "$out/patbench-$tag.txt" 2>&1; tail -14 "$out/patbench-$tag.txt"
  if [ "${FI:-1}" = 1 ]; then
    flashinfer_wheels
    timeout 200 $py bench/peers.py --methods flashinfer_decode,flashinfer_cascade \
      --out "$out/peers-flashinfer-$tag.jsonl" 2>&1 | tail -24
  fi
  $py bench/chart.py "$out/chart-$tag.png" "$out/patbench-$tag.jsonl" bench/results/peers-*${tag%%-*}-*.jsonl \
    $(ls "$out/peers-flashinfer-$tag.jsonl" 2>/dev/null) --heads 32/8
  [ "${TUNE:-0}" = 1 ] && tune_table
  ;;
final)
  # The quick GPU suites (all but the long paper-tree sweep), old vs new kernels on small
  # trees (build/gpu_base: a bundle of the previous commit, when carried), the tuner, then
  # the benchmark with the table it wrote. Each step is time-boxed to fit one call.
  quick_tests 2>&1 | tee "$out/final-tests-$tag.log"
  if [ -d build/gpu_base ]; then
    TREES="1,10_4096,416 2,8,16,256_256,256,32,32 1,4,8,256_32,256,256,32 1,1024_2048,32" ITERS=200 \
      ab_trees 2>&1 | tee "$out/final-ab-$tag.log"
  fi
  timeout 170 build/gpu/pattune --iters 15 2>&1 | tee "$out/final-tune-$tag.log" | grep -v "^pattune: gqa"
  cp specs/default.tune.*.yaml "$out/" 2>/dev/null
  left=$((575 - SECONDS))
  timeout $left build/gpu/patbench --spec specs/default.yaml --iters 50 --out "$out/patbench-tuned-$tag.jsonl" 2>&1 | tee "$out/patbench-tuned-$tag.txt" | tail -16
  ;;
detail)
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  i=0
  for case in ${CASES:-2,8,16,256_256,256,32,32:64/8 1,256_256,32:16/8}; do
    i=$((i + 1)); echo "== detail $i: $case"
    timeout 150 $ncu --clock-control none --page details \
      --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
      build/gpu/patgen run --tree ${case%%:*} --heads ${case##*:} --iters 1 > "$out/detail-$tag-$i.txt" 2>&1
    grep -E '^  [a-z_]+.*\(|Duration|Registers Per|Achieved Occ|Theoretical Occ|Block Limit|Stall|Compute \(SM\) Thr|Memory Thr|DRAM Thr|Warp Cycles Per Issued|Issued Warp' "$out/detail-$tag-$i.txt" | head -80
  done
  ;;
ab)
  quick_tests 2>&1 | tee "$out/ab-tests-$tag.log"
  TREES=${TREES:-"1,10_4096,416 1,256_256,32 2,8,16,256_256,256,32,32 1,4,16,512_1024,256,128,32 1,1024_2048,32 256_1024"} \
    ITERS=100 ab_trees 2>&1 | tee "$out/ab-trees-$tag.log"
  timeout 200 bench/probe_sweep.sh 2>&1 | grep -v '^ptxas' | tee "$out/ab-sweep-$tag.log"
  ;;
wgmma)
  timeout 300 bench/wgmma/run.sh 2>&1 | tee "$out/wgmma-$tag.log"
  ;;
order)
  timeout 300 bench/cta_order.sh 2>&1 | tee "$out/cta-order-$tag.log"
  ;;
subset)
  quick_tests 2>&1 | tee "$out/subset-tests-$tag.log"
  trees=$SUBSET_TREES
  runs="gpu:specs/default.yaml"
  [ -d build/gpu_base ] && runs="gpu_base:specs/default.yaml $runs"
  for s in ${SPECS:-}; do runs="$runs gpu:$s"; done
  for r in $runs; do
    b=${r%%:*} spec=${r#*:} n=$(basename ${r#*:} .yaml)-${r%%:*}
    echo "== $n: $(LD_LIBRARY_PATH=$PWD/build/$b/lib timeout 100 build/$b/patbench --spec $spec --trees "$trees" \
      --iters 50 --check 2 --out "$out/subset-$n-$tag.jsonl" 2>&1 | tee "$out/subset-$n-$tag.txt" | grep -E 'geomean|fail')"
  done
  ;;
pdl)
  quick_tests 2>&1 | tee "$out/pdl-tests-$tag.log"
  for v in off on; do
    echo "== PAT_PDL=$v: $(PAT_PDL=$v timeout 100 build/gpu/patbench --spec specs/default.yaml --trees "$SUBSET_TREES" \
      --iters 50 --check 2 --out "$out/pdl-$v-$tag.jsonl" 2>&1 | tee "$out/pdl-$v-$tag.txt" | grep -E 'geomean|fail')"
  done
  ;;
carveout)
  # PAT_SMEM_CARVEOUT: each kernel's own carveout (the driver's choice) against the largest for
  # every kernel, so that CTAs of different launches can share an SM; the subset at 50 runs a
  # case, the driver's choice again last (the drift between runs).
  timeout 150 build/gpu/tests --filter 'gpu/smem_carveout*' 2>&1 | grep -E '^\[(FAIL|====)\]|Assert'
  for v in default max default2; do
    echo "== PAT_SMEM_CARVEOUT=$v: $(PAT_SMEM_CARVEOUT=${v%2} timeout 100 build/gpu/patbench --trees "$SUBSET_TREES" \
      --iters 50 --check 2 --out "$out/carveout-$v-$tag.jsonl" 2>&1 | tee "$out/carveout-$v-$tag.txt" | grep -E 'geomean|fail')"
  done
  ;;
leafheads)
  # The memory side of leaf CTAs that take several kv heads (bench/leaf_heads/leaf_heads.cu,
  # built here or carried as build/leaf_heads).
  [ -x build/leaf_heads ] || nvcc -std=c++17 -O2 -arch=sm_90 bench/leaf_heads/leaf_heads.cu -o build/leaf_heads
  timeout 200 build/leaf_heads 2>&1 | tee "$out/leaf-heads-$tag.log"
  ;;
sass)
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  case=${CASE:-1,256_256,32:64/8}
  # The plan with the table the run's context applies on this GPU (none: the cost model's).
  table=specs/default.tune.$(echo "$gpu" | sed 's/^NVIDIA //' | tr 'A-Z ' 'a-z-').yaml
  [ -f "$table" ] && [ "${PAT_TUNING:-}" != off ] && tuning="--tuning $table" || tuning=
  echo "plan of $case: ${tuning:-cost model}"
  for k in $(build/gpu/patgen plan ${case%%:*} --heads ${case##*:} $tuning | awk '/^prefix/ {p = 1} /^direct/ {p = 0} p && /^  tile/ {print $2}' | tr -d :) merge; do
    f="$out/sass-$k-$tag.csv"
    timeout 120 $ncu --clock-control none --section SourceCounters --section WarpStateStats --page source \
      --print-source sass --csv -k regex:$k --launch-count 1 \
      build/gpu/patgen run --tree ${case%%:*} --heads ${case##*:} --iters 1 > "$f" 2>&1
    echo "== $k"; python3 bench/ncu_sass_summary.py "$f" 2>&1 | head -30
    gzip -f "$f"
  done
  ;;
variants)
  [ "${SWEEP:-1}" = 1 ] && timeout 150 bench/probe_sweep.sh 2>&1 | grep -v "^ptxas" | tee "$out/variants-sweep-$tag.log"
  mkdir -p build/variants
  specs=$([ "${BASE:-1}" = 1 ] && echo specs/default.yaml)
  while IFS=: read -r name subs; do
    [ -n "$name" ] || continue
    f=build/variants/$name.yaml
    sed "s/^name: default/name: $name/" specs/default.yaml > $f
    IFS=';' read -ra pairs <<< "$subs"
    for p in "${pairs[@]}"; do sed -i "s/{${p%%=*}}/{${p#*=}}/" $f; done
    specs="$specs $f"
  done <<< "${VARIANTS:-}"
  for s in $specs; do
    n=$(basename $s .yaml)
    echo "== $n: $(grep -c warp_rows $s) tiles of 32 rows a warp, $(grep -c "wgmma: 1" $s) wgmma tiles"
    timeout 150 build/gpu/patbench --spec $s --iters 30 --check 2 --out "$out/variants-$n-$tag.jsonl" \
      2>&1 | tee "$out/variants-$n-$tag.txt" | tail -8
  done
  ;;
tune)
  tune_table
  ;;
probes)
  carried_probes
  ;;
*) echo "usage: bench/device_session.sh tests|python|patbench|peers|readings|probe|detail|ab|wgmma|variants|final|tune|probes|subset|pdl|order|sass|leafheads"; exit 2 ;;
esac
