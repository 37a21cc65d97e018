#!/usr/bin/env python3
"""peers.py: decode attention of the peers present on the GPU machine, on the paper's workloads.

For each tree x head configuration (fp16, head_dim 128, page 32) and each method:
  sdpa_flash        torch SDPA, flash backend, over per-request contiguous KV (B, Hkv, L, D);
                    GQA through enable_gqa=True (falls back to packing the q heads of a group
                    as query rows when the flash backend refuses enable_gqa; the JSON says which)
  sdpa_flash_packed torch SDPA, flash backend, same KV; the g = q/kv heads of a group are
                    passed as g query rows of one kv head (non-causal, so exact): KV read once
                    per kv head
  flex_decode       torch.compile(flex_attention) over the same contiguous KV (decode kernel)
  flex_tree         torch.compile(flex_attention) over the unique-token buffer (every token of
                    the tree once, level-major) with a block mask from the tree: query i sees
                    token j iff j is on i's root-to-leaf path; Q = all requests as one sequence
                    of B tokens (padded to a multiple of 128; padded rows see nothing)
  flashinfer_decode FlashInfer's BatchDecodeWithPagedKVCacheWrapper over the unique buffer as a
                    paged cache (pages stored once, each request's table lists its path's
                    pages); tensor cores for GQA groups >= 4
  flashinfer_cascade FlashInfer's MultiLevelCascadeAttentionWrapper, one level per tree level
                    (shared pages read once per level, states merged)
                    Both only when flashinfer is importable (its wheels carried to the GPU
                    machine); otherwise skipped and said so in the output

Timed: only the attention call(s). The gather into contiguous KV, the block-mask build and the
compilation are not timed. Each timed run is preceded by a 256 MiB write (L2 flush); CUDA events
around the method alone; median and min of --iters runs after warm-up (fewer for runs over
--slow-ms, recorded in "iters"). The host runs ahead of the GPU behind a sleep kernel so that
launch overhead on the host does not show up between the events.

Correctness: the output of every method is compared with an fp32 reference computed by torch
from the unique-token buffer and each request's token list (relative L2 error over the whole
output; ok iff finite and rel_err < 5e-3, as bench/patbench.c). A wrong result is reported as
wrong (ok false) and left out of the summary.

Floor (as bench/patbench.c): bytes floor = (unique KV bytes + q bytes + out bytes) / copy
bandwidth measured in this run (1 GiB device-to-device copy, bytes read + written, best of 10);
FLOP floor = 4 x q_heads x head_dim x (KV tokens per query, summed) / --mma-tflops;
floor_us = the larger. x_floor = median_us / floor_us.

Output: JSON lines (one per case x method) to --out (default stdout), then a table.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

PAPER_TREES = [
    "1,10_4096,416", "1,256_256,32", "1,1024_2048,32", "1,2,64_1024,256,256", "1,4,256_32,256,32",
    "1,8,512_32,512,256", "1,8,512_32,2048,256", "1,8,512_512,512,256", "1,4,8,256_32,256,256,32",
    "1,4,16,512_1024,256,128,32", "1,4,16,64,256,1024_256,32,256,64,32,256",
    "1,16,32,64,128,1024_256,128,64,32,32,32", "1,16,32,64,256,1024_256,128,64,32,32,32",
    "1,8,16,32,64,128,1024_256,128,64,32,32,32,32", "1,8,16,32,64,256,1024_256,128,64,32,32,32,32",
    "2,8,16,256_256,256,32,32", "4,16,256,512_512,32,128,32", "8,16,32,256_512,512,256,32",
    "256_1024", "256_4096"]
HEADS = [(32, 32), (16, 8), (32, 8), (64, 8)]
METHODS = ["sdpa_flash", "sdpa_flash_packed", "flex_decode", "flex_tree", "flashinfer_decode",
           "flashinfer_cascade"]
FLASHINFER = ("flashinfer_decode", "flashinfer_cascade")
HEAD_DIM = 128
PAGE = 32
TOL = 5e-3


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- workloads (as runtime/tree.c)
class Tree:
    """COUNTS_LENGTHS: counts[l] nodes at level l, each of lens[l] tokens; node n of level l is
    the ancestor of leaf q iff n == q // (leaves / counts[l]). One request per leaf."""

    def __init__(self, text, page=PAGE):
        if "_" not in text:
            raise ValueError(f"tree '{text}': expected COUNTS_LENGTHS")
        a, b = text.split("_", 1)
        cnt = [int(x) for x in a.split(",")]
        ln = [int(x) for x in b.split(",")]
        if len(cnt) != len(ln) or not cnt or min(cnt + ln) < 1:
            raise ValueError(f"tree '{text}': counts and lengths must be lists of positive integers "
                             "of the same length")
        for l in range(len(cnt) - 1):
            if cnt[l + 1] % cnt[l]:
                raise ValueError(f"tree '{text}': level {l + 1} count not a multiple of level {l}'s")
            if ln[l] % page:
                raise ValueError(f"tree '{text}': level {l} length not a multiple of the page size")
        self.text, self.cnt, self.len = text, cnt, ln
        self.levels = len(cnt)
        self.num_requests = cnt[-1]
        self.unique_tokens = sum(c * n for c, n in zip(cnt, ln))
        self.seq_len = sum(ln)  # every leaf: the same path length
        self.sharing = self.levels > 1
        # level-major unique buffer: level l starts at off[l]; node n of level l at off[l] + n*len[l]
        self.off = []
        o = 0
        for c, n in zip(cnt, ln):
            self.off.append(o)
            o += c * n

    def ancestors(self, device):
        """(B, levels) int64: the node index at each level on each request's path."""
        q = torch.arange(self.num_requests, device=device)
        return torch.stack([q // (self.num_requests // c) for c in self.cnt], dim=1)

    def token_index(self, device):
        """(B, L) int64: the unique-buffer position of every token of each request's path."""
        anc = self.ancestors(device)
        cols = []
        for l in range(self.levels):
            base = self.off[l] + anc[:, l] * self.len[l]
            cols.append(base[:, None] + torch.arange(self.len[l], device=device)[None, :])
        return torch.cat(cols, dim=1)

    def token_levels(self, device):
        """(U,) level and (U,) node-within-level of every unique token."""
        lv, nd = [], []
        for l in range(self.levels):
            n = self.cnt[l] * self.len[l]
            lv.append(torch.full((n,), l, dtype=torch.int32, device=device))
            nd.append((torch.arange(n, device=device) // self.len[l]).to(torch.int32))
        return torch.cat(lv), torch.cat(nd)


# ---------------------------------------------------------------- timing
class Timer:
    def __init__(self, flush_bytes=256 << 20):
        self.flush = torch.empty(flush_bytes // 4, dtype=torch.int32, device="cuda")
        # cycles of torch.cuda._sleep per millisecond, for holding the GPU while the host queues
        torch.cuda._sleep(1000)
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = None
        for _ in range(3):
            e0.record()
            torch.cuda._sleep(10_000_000)
            e1.record()
            e1.synchronize()
            ms = e0.elapsed_time(e1)
            best = ms if best is None or ms < best else best
        self.cycles_per_ms = 10_000_000 / max(best, 1e-3)

    def run(self, fn, iters, warmup=5, slow_ms=10.0):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        # host launch cost and one GPU run (L2 flushed) to size the batches
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.flush.fill_(7)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        e0.record()
        fn()
        e1.record()
        host_ms = (time.perf_counter() - t0) * 1e3
        e1.synchronize()
        one_ms = e0.elapsed_time(e1)
        n = iters
        if one_ms > slow_ms:
            n = max(20, min(iters, int(1000.0 / one_ms)))
        times = []
        batch = 20
        i = 0
        while i < n:
            k = min(batch, n - i)
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(k)]
            # the GPU waits while the host queues the whole batch: no host gaps inside the events
            torch.cuda._sleep(int(self.cycles_per_ms * (k * (host_ms + 0.05) * 1.5 + 0.5)))
            for j in range(k):
                self.flush.fill_(i + j)
                ev[j][0].record()
                fn()
                ev[j][1].record()
            torch.cuda.synchronize()
            times += [a.elapsed_time(b) * 1e3 for a, b in ev]
            i += k
        times.sort()
        return times[len(times) // 2], times[0], n


def copy_bandwidth():
    n = 1 << 30
    a = torch.ones(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 0.0
    for i in range(12):
        e0.record()
        b.copy_(a)
        e1.record()
        e1.synchronize()
        bw = 2.0 * n / (e0.elapsed_time(e1) * 1e-3)
        if i >= 2:
            best = max(best, bw)
    del a, b
    torch.cuda.empty_cache()
    return best


# ---------------------------------------------------------------- one case
class Case:
    def __init__(self, tree, qh, kvh, seed):
        self.tree, self.qh, self.kvh = tree, qh, kvh
        self.g = qh // kvh
        dev = "cuda"
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed)
        U, B, D = tree.unique_tokens, tree.num_requests, HEAD_DIM
        # unique-token KV buffer, (Hkv, U, D): every shared token stored once
        self.ku = torch.randn(kvh, U, D, dtype=torch.float16, device=dev, generator=gen)
        self.vu = torch.randn(kvh, U, D, dtype=torch.float16, device=dev, generator=gen)
        self.q = torch.randn(B, qh, D, dtype=torch.float16, device=dev, generator=gen)
        self.idx = tree.token_index(dev)  # (B, L)
        self.scale = 1.0 / math.sqrt(D)
        self.kc = self.vc = None
        self.ref = self._reference()

    def _chunks(self, bytes_per_request, limit=1 << 30):
        B = self.tree.num_requests
        step = max(1, int(limit // max(bytes_per_request, 1)))
        for r0 in range(0, B, step):
            yield r0, min(B, r0 + step)

    def _reference(self):
        """fp32 reference from the unique buffer and the per-request token lists."""
        B, L, D = self.tree.num_requests, self.tree.seq_len, HEAD_DIM
        out = torch.empty(B, self.qh, D, dtype=torch.float32, device="cuda")
        for r0, r1 in self._chunks(self.kvh * L * D * 4 * 2 + self.qh * L * 4 * 2, 2 << 30):
            ix = self.idx[r0:r1]
            k = self.ku[:, ix].float()  # (Hkv, b, L, D)
            v = self.vu[:, ix].float()
            q = self.q[r0:r1].float().view(r1 - r0, self.kvh, self.g, D).permute(1, 0, 2, 3)
            s = torch.einsum("hbgd,hbld->hbgl", q, k) * self.scale
            p = torch.softmax(s, dim=-1)
            o = torch.einsum("hbgl,hbld->hbgd", p, v)  # (Hkv, b, g, D)
            out[r0:r1] = o.permute(1, 0, 2, 3).reshape(r1 - r0, self.qh, D)
            del k, v, s, p, o
        return out

    def contiguous_kv(self):
        """Per-request contiguous KV, gathered from the unique buffer (untimed): a list of
        (q (b, Hq, D), K (b, Hkv, L, D), V) batches. Requests are grouped by sequence length
        (the paper trees have one length), and a group is cut into equal batches of fewer than
        2^31 elements per K tensor (flex_attention's compiled decode kernel fails to compile
        beyond that; SDPA gets the same batches so that both read the same tensors)."""
        if self.kc is None:
            B, L, D = self.tree.num_requests, self.tree.seq_len, HEAD_DIM
            per = self.kvh * L * D
            n = 1
            while (B + n - 1) // n * per >= 1 << 31:
                n += 1
            while B % n and n < B:  # equal batches where B allows: one compile per method
                n += 1
            size = (B + n - 1) // n
            self.kc = []
            for r0 in range(0, B, size):
                r1 = min(B, r0 + size)
                ix = self.idx[r0:r1]
                k = self.ku[:, ix].permute(1, 0, 2, 3).contiguous()
                v = self.vu[:, ix].permute(1, 0, 2, 3).contiguous()
                self.kc.append((self.q[r0:r1].clone(), k, v))
        return self.kc

    def check(self, out):
        """out: (B, qh, D) in any float dtype. Returns (rel_err, ok)."""
        o = out.float()
        finite = bool(torch.isfinite(o).all())
        num = torch.linalg.vector_norm(o - self.ref).item()
        den = torch.linalg.vector_norm(self.ref).item()
        rel = num / den if den > 0 else 0.0
        return rel, finite and math.isfinite(rel) and rel < TOL

    def free(self):
        self.kc = self.vc = self.ku = self.vu = self.q = self.ref = self.idx = None


# ---------------------------------------------------------------- methods
# Each returns (fn, get_output, info): fn() runs the method (the timed part), get_output() gives
# the last result as (B, qh, D); info is a dict of notes for the JSON line.

def m_sdpa_flash(case, packed=False):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    batches = case.contiguous_kv()
    D = HEAD_DIM
    info = {"gqa": "none" if case.g == 1 else ("packed" if packed else "enable_gqa"),
            "calls": len(batches), "timed": "attention call only (KV gather untimed)"}
    res = [None] * len(batches)
    gqa = not (packed or case.g == 1)
    if gqa:
        qs = [q.view(-1, case.qh, 1, D) for q, _, _ in batches]
    else:  # the g q heads of kv head j as g query rows of kv head j (non-causal: exact)
        qs = [q.view(-1, case.kvh, case.g, D) for q, _, _ in batches]

    def fn():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            for i, (_, k, v) in enumerate(batches):
                if gqa:
                    res[i] = F.scaled_dot_product_attention(qs[i], k, v, scale=case.scale,
                                                            enable_gqa=True)
                else:
                    res[i] = F.scaled_dot_product_attention(qs[i], k, v, scale=case.scale)

    try:
        fn()
        torch.cuda.synchronize()
    except RuntimeError as e:  # flash refuses enable_gqa: pack the group's heads as rows
        if not gqa or "out of memory" in str(e).lower():
            raise
        log(f"  sdpa_flash: enable_gqa refused by the flash backend ({str(e).splitlines()[0]}); "
            "packing q heads as rows")
        return m_sdpa_flash(case, packed=True)[0:2] + (dict(info, gqa="packed (enable_gqa "
                                                              "refused)"),)

    def out():
        return torch.cat([r.reshape(-1, case.qh, D) for r in res], dim=0)

    return fn, out, info


_flex_compiled = None


def flex():
    global _flex_compiled
    if _flex_compiled is None:
        import torch._dynamo
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 100000)
        from torch.nn.attention.flex_attention import flex_attention
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    return _flex_compiled


def m_flex_decode(case):
    batches = case.contiguous_kv()
    D = HEAD_DIM
    fa = flex()
    qs = [q.view(-1, case.qh, 1, D) for q, _, _ in batches]
    res = [None] * len(batches)
    gqa = case.g > 1

    def fn():
        for i, (_, k, v) in enumerate(batches):
            res[i] = fa(qs[i], k, v, scale=case.scale, enable_gqa=gqa)

    def out():
        return torch.cat([r.reshape(-1, case.qh, D) for r in res], dim=0)

    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return fn, out, {"gqa": "enable_gqa" if gqa else "none", "calls": len(batches),
                     "compile_s": round(time.perf_counter() - t0, 2),
                     "timed": "attention call only (KV gather, compile untimed)"}


def m_flex_tree(case):
    from torch.nn.attention.flex_attention import create_block_mask
    tree = case.tree
    B, D, U = tree.num_requests, HEAD_DIM, tree.unique_tokens
    Bp = (B + 127) // 128 * 128
    dev = "cuda"
    nlev = tree.levels
    anc = torch.full((Bp, nlev), -1, dtype=torch.int32, device=dev)  # padded rows: nothing
    anc[:B] = tree.ancestors(dev).to(torch.int32)
    anc_flat = anc.reshape(-1).contiguous()
    tok_level, tok_node = tree.token_levels(dev)

    def mask_mod(b, h, q_idx, kv_idx):
        lvl = tok_level[kv_idx]
        return anc_flat[q_idx * nlev + lvl] == tok_node[kv_idx]

    t0 = time.perf_counter()
    bm = create_block_mask(mask_mod, 1, None, Bp, U, device=dev, BLOCK_SIZE=128)
    torch.cuda.synchronize()
    mask_s = time.perf_counter() - t0
    qt = torch.zeros(1, case.qh, Bp, D, dtype=torch.float16, device=dev)
    qt[0, :, :B] = case.q.permute(1, 0, 2)
    k = case.ku.unsqueeze(0)  # (1, Hkv, U, D), contiguous
    v = case.vu.unsqueeze(0)
    fa = flex()
    gqa = case.g > 1
    res = [None]

    def fn():
        res[0] = fa(qt, k, v, block_mask=bm, scale=case.scale, enable_gqa=gqa)

    def out():
        return res[0][0, :, :B].permute(1, 0, 2)

    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return fn, out, {"gqa": "enable_gqa" if gqa else "none", "q_len": Bp,
                     "mask_build_s": round(mask_s, 2), "compile_s": round(time.perf_counter() - t0, 2),
                     "timed": "attention call only (block mask build, compile untimed)"}


def paged_kv(case):
    """The unique-token buffer as FlashInfer's paged cache ("NHD": (pages, PAGE, Hkv, D) for K
    and for V), stored once: page p holds unique tokens p*PAGE .. p*PAGE+PAGE-1. Every node's
    length is a multiple of PAGE, so a node's tokens are whole pages in a row."""
    U = case.tree.unique_tokens
    k = case.ku.permute(1, 0, 2).reshape(U // PAGE, PAGE, case.kvh, HEAD_DIM).contiguous()
    v = case.vu.permute(1, 0, 2).reshape(U // PAGE, PAGE, case.kvh, HEAD_DIM).contiguous()
    return k, v


_fi_workspace = None


def fi_workspace():
    global _fi_workspace
    if _fi_workspace is None:  # FlashInfer's recommended 128 MiB float workspace
        _fi_workspace = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
    return _fi_workspace


def fi_planned_run(case, w, tables, info):
    """Plans FlashInfer wrapper w over the page tables (untimed, as its own plan time), runs it
    once (JIT compiles on first use), and returns (fn, get_output, info) for the timer."""
    t0 = time.perf_counter()
    w.plan(*tables, case.qh, case.kvh, HEAD_DIM, PAGE, pos_encoding_mode="NONE",
           sm_scale=case.scale, q_data_type=torch.float16, kv_data_type=torch.float16)
    torch.cuda.synchronize()
    plan_s = time.perf_counter() - t0
    k, v = paged_kv(case)
    res = [None]

    def fn():
        res[0] = w.run(case.q, (k, v))

    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return fn, lambda: res[0], dict(info, plan_s=round(plan_s, 4),
                                    compile_s=round(time.perf_counter() - t0, 2),
                                    timed="run only (plan, JIT compile untimed)")


def m_flashinfer_decode(case):
    """BatchDecodeWithPagedKVCacheWrapper: one page table per request (its path's pages;
    shared pages appear in many tables, stored once, read once per request). Tensor cores for
    GQA groups of 4 and more, as FlashInfer advises."""
    import flashinfer
    tree, dev = case.tree, "cuda"
    B, L = tree.num_requests, tree.seq_len
    pages = (case.idx[:, ::PAGE] // PAGE).to(torch.int32)  # (B, L / PAGE)
    indptr = (torch.arange(B + 1, device=dev, dtype=torch.int32) * (L // PAGE))
    last = torch.full((B,), PAGE, dtype=torch.int32, device=dev)
    tc = case.g >= 4
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(fi_workspace(), "NHD", use_tensor_cores=tc)
    return fi_planned_run(case, w, (indptr, pages.reshape(-1).contiguous(), last),
                          {"use_tensor_cores": tc})


def m_flashinfer_cascade(case):
    """MultiLevelCascadeAttentionWrapper, one level per tree level: at level l the queries
    under node n (a contiguous range, requests are in leaf order) attend to node n's pages,
    each read once per level; the levels' partial states are merged by merge_state_in_place."""
    import flashinfer
    tree, dev = case.tree, "cuda"
    B = tree.num_requests
    qo, kvp, kvi, last = [], [], [], []
    for l in range(tree.levels):
        n, npg = tree.cnt[l], tree.len[l] // PAGE
        qo.append(torch.arange(n + 1, device=dev, dtype=torch.int32) * (B // n))
        kvp.append(torch.arange(n + 1, device=dev, dtype=torch.int32) * npg)
        kvi.append(torch.arange(n * npg, device=dev, dtype=torch.int32) + tree.off[l] // PAGE)
        last.append(torch.full((n,), PAGE, dtype=torch.int32, device=dev))
    w = flashinfer.MultiLevelCascadeAttentionWrapper(tree.levels, fi_workspace(), "NHD")
    return fi_planned_run(case, w, (qo, kvp, kvi, last), {"levels": tree.levels})


BUILDERS = {
    "sdpa_flash": lambda c: m_sdpa_flash(c, packed=False),
    "sdpa_flash_packed": lambda c: m_sdpa_flash(c, packed=True),
    "flex_decode": m_flex_decode,
    "flex_tree": m_flex_tree,
    "flashinfer_decode": m_flashinfer_decode,
    "flashinfer_cascade": m_flashinfer_cascade,
}


def short_err(e):
    s = f"{type(e).__name__}: {e}".strip().splitlines()
    s = s[0] if s else type(e).__name__
    return s[:300]


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trees", help="';'-separated subset (default: the paper's 20 trees)")
    ap.add_argument("--heads", help="subset, e.g. 32/8,64/8 (default 32/32,16/8,32/8,64/8)")
    ap.add_argument("--methods", help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--slow-ms", type=float, default=10.0,
                    help="runs slower than this get fewer iterations (>= 20, about 1 s of runs)")
    ap.add_argument("--mma-tflops", type=float, default=745.0)
    ap.add_argument("--deadline-s", type=float, default=0,
                    help="start no new tree after this many seconds (0: none); skipped ones listed")
    ap.add_argument("--out", help="JSON lines file (default stdout)")
    a = ap.parse_args()

    trees = a.trees.split(";") if a.trees else list(PAPER_TREES)
    heads = [tuple(int(x) for x in h.split("/")) for h in a.heads.split(",")] if a.heads else HEADS
    methods = a.methods.split(",") if a.methods else list(METHODS)
    for m in methods:
        if m not in BUILDERS:
            ap.error(f"unknown method {m}")
    flashinfer_note = None
    if any(m in FLASHINFER for m in methods):
        try:
            import flashinfer
            log(f"flashinfer {flashinfer.__version__}")
        except Exception as e:  # not on the GPU machine unless its wheels are carried
            flashinfer_note = (f"flashinfer: skipped, not importable here ({short_err(e)}); "
                               "its wheels were not carried")
            methods = [m for m in methods if m not in FLASHINFER]
            log(flashinfer_note)

    t_start = time.time()
    gpu = torch.cuda.get_device_name()
    date = time.strftime("%Y-%m-%d", time.gmtime())
    out = open(a.out, "w") if a.out else sys.stdout
    bw = copy_bandwidth()
    timer = Timer()
    log(f"{gpu}: torch {torch.__version__}, copy bandwidth {bw / 1e12:.2f} TB/s; "
        f"{len(trees)} trees x {len(heads)} head configs x {methods}")

    rows = []
    skipped = []
    for ti, text in enumerate(trees):
        if a.deadline_s and time.time() - t_start > a.deadline_s:
            skipped.append(text)
            continue
        tree = Tree(text)
        for hi, (qh, kvh) in enumerate(heads):
            try:
                case = Case(tree, qh, kvh, seed=1000 + ti * 8 + hi)
            except Exception as e:
                log(f"{text} {qh}/{kvh}: setup failed: {short_err(e)}")
                for m in methods:
                    r = dict(gpu=gpu, date=date, tree=text, q_heads=qh, kv_heads=kvh, method=m,
                             median_us=None, min_us=None, x_floor=None, rel_err=None, ok=False,
                             error="setup: " + short_err(e))
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    rows.append(dict(r, sharing=tree.sharing))
                torch.cuda.empty_cache()
                continue
            kv_bytes = tree.unique_tokens * kvh * HEAD_DIM * 2 * 2
            qo_bytes = 2 * tree.num_requests * qh * HEAD_DIM * 2
            bw_floor = (kv_bytes + qo_bytes) / bw * 1e6
            flops = 4.0 * qh * HEAD_DIM * tree.num_requests * tree.seq_len
            flop_floor = flops / (a.mma_tflops * 1e12) * 1e6
            floor = max(bw_floor, flop_floor)
            for m in methods:
                r = dict(gpu=gpu, date=date, tree=text, q_heads=qh, kv_heads=kvh, method=m,
                         median_us=None, min_us=None, floor_us=round(floor, 2),
                         bw_floor_us=round(bw_floor, 2), flop_floor_us=round(flop_floor, 2),
                         x_floor=None, copy_tbps=round(bw / 1e12, 3), rel_err=None, ok=False,
                         error=None)
                try:
                    fn, get_out, info = BUILDERS[m](case)
                    rel, ok = case.check(get_out())
                    med, mn, n = timer.run(fn, a.iters, slow_ms=a.slow_ms)
                    r.update(median_us=round(med, 2), min_us=round(mn, 2),
                             x_floor=round(med / floor, 3), rel_err=float(f"{rel:.3e}"), ok=ok,
                             iters=n, **info)
                    if not ok:
                        r["error"] = f"wrong result: rel_err {rel:.3e} (tolerance {TOL})"
                except Exception as e:
                    r["error"] = short_err(e)
                    log(f"{text} {qh}/{kvh} {m}: " + str(e)[-1500:])
                fn = get_out = None
                out.write(json.dumps(r) + "\n")
                out.flush()
                r["sharing"] = tree.sharing
                rows.append(r)
                if r["median_us"] is not None:
                    log(f"{text:46s} {qh:2d}/{kvh:<2d} {m:18s} {r['median_us']:10.1f} us "
                        f"{r['x_floor']:7.2f}x floor  rel_err {r['rel_err']:.1e}"
                        f"{'' if r['ok'] else '  WRONG'}"
                        + (f"  (compile {info['compile_s']} s)" if "compile_s" in info else ""))
                else:
                    log(f"{text:46s} {qh:2d}/{kvh:<2d} {m:18s} FAILED: {r['error']}")
                torch.cuda.empty_cache()
            case.free()
            del case
            torch.cuda.empty_cache()

    # ---------------- table
    print(f"\n{gpu}, torch {torch.__version__}, copy {bw / 1e12:.2f} TB/s; median us (x floor)")
    hdr = f"{'tree':46s} {'heads':6s} {'floor':>8s}"
    for m in methods:
        hdr += f" {m:>20s}"
    print(hdr)
    cases = {}
    for r in rows:
        cases.setdefault((r["tree"], r["q_heads"], r["kv_heads"]), {})[r["method"]] = r
    for (t, qh, kvh), ms in cases.items():
        fl = next((r["floor_us"] for r in ms.values() if r.get("floor_us")), None)
        line = f"{t:46s} {qh:2d}/{kvh:<3d} {fl if fl is not None else float('nan'):8.1f}"
        for m in methods:
            r = ms.get(m)
            if r is None:
                cell = "-"
            elif r.get("median_us") is None:
                cell = "FAILED"
            elif not r["ok"]:
                cell = "WRONG"
            else:
                cell = f"{r['median_us']:.1f} ({r['x_floor']:.2f}x)"
            line += f" {cell:>20s}"
        print(line)
    print("geometric mean of x_floor over sharing trees (correct results only):")
    for m in methods:
        xs = [r["x_floor"] for r in rows if r["method"] == m and r.get("sharing") and r["ok"]]
        nall = sum(1 for r in rows if r["method"] == m and r.get("sharing"))
        if xs:
            gm = math.exp(sum(math.log(x) for x in xs) / len(xs))
            print(f"  {m:18s} {gm:6.2f}x over {len(xs)} of {nall} cases, worst {max(xs):.2f}x")
        else:
            print(f"  {m:18s} no correct results over {nall} cases")
    for r in rows:
        if not r.get("sharing") and r["ok"] and r.get("median_us"):
            print(f"  no sharing {r['tree']} {r['q_heads']}/{r['kv_heads']} {r['method']}: "
                  f"{100 * r['bw_floor_us'] / r['median_us']:.0f}% of copy bandwidth")
    bad = [r for r in rows if not r["ok"]]
    for r in bad:
        print(f"  not ok: {r['tree']} {r['q_heads']}/{r['kv_heads']} {r['method']}: {r['error']}")
    if flashinfer_note:
        print("  " + flashinfer_note)
    if skipped:
        print(f"  not run (past --deadline-s {a.deadline_s:.0f} s): {';'.join(skipped)}")
    print(f"  {len(bad)} failures; {time.time() - t_start:.0f} s")
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
