#!/usr/bin/env bash
# base_bundle.sh REF: the GPU bundle (`make gpu-bundle`) of commit REF, built in a temporary
# worktree and copied to build/gpu_base, for device_session.sh's old-vs-new phases (abfull,
# ab, subset). Prints the commit the bundle records.
set -eu
ref=$(git rev-parse --short "${1:?usage: bench/base_bundle.sh REF}^{commit}")
wt=$(mktemp -d /tmp/pat-base-XXXXXX)
trap 'git worktree remove --force "$wt"; rm -rf "$wt" "$wt.log"' EXIT
git worktree add -q --detach "$wt" "$ref"
make -s -C "$wt" all gpu-bundle > "$wt.log" 2>&1 || { tail -20 "$wt.log"; exit 1; }
rm -rf build/gpu_base && mkdir -p build && cp -r "$wt/build/gpu" build/gpu_base
echo "build/gpu_base: $(cat build/gpu_base/SOURCE) ($(du -sh build/gpu_base | cut -f1))"
