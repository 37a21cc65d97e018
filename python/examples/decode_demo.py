#!/usr/bin/env python3
"""decode_demo.py: an end-to-end decode loop of a Llama-shaped model on a paged KV cache
with shared prefixes, attention by pat (prefix mode), pat's direct mode and PyTorch SDPA.

The model has Llama-3-8B's dimensions (hidden 4096, 32 q heads over 8 kv heads, head_dim
128, FFN 14336, vocabulary 128256) with random weights and a few layers (--layers). The KV
cache is paged as vLLM pages it (page size 32, [num_pages][page_size][kv_heads][head_dim]
per layer for K and for V). A workload tree such as "1,4,64_1024,256,64" gives the prompts:
one 1024-token system prompt shared by all requests, 4 tool templates of 256 tokens shared
by a quarter of the requests each, then 64 tokens of each of the 64 requests. Prefill is
skipped: the prompt's pages hold random K/V. Each decode step embeds one token per
request, runs the layers (RMSNorm, fused QKV, RoPE, append K/V to the request's own pages
(a new page when the last one is full; shared pages stay shared), attention, output
projection, SwiGLU MLP) and the LM head, and takes the argmax.

Attention per layer, one of:
  pat      pat, prefix mode: one plan per step (host scheduling of the block tables),
           reused by every layer
  direct   pat, direct mode (one query per CTA, flash-decoding splits): same kernels
  sdpa     torch.nn.functional.scaled_dot_product_attention over each request's KV gathered
           from its pages into a contiguous [B, kv_heads, L, head_dim] tensor (the g q heads
           of a kv head are its g query rows, which is exact for decode)

Reported per batch size: TPOT (time per output token: wall time of --steps decode steps
after --warmup steps, synchronised at both ends, divided by --steps; each step gives one
token to every request), the attention time of one layer (CUDA events, median), the plan
build time, and the agreement of the three methods' logits over --check-steps steps fed
the same tokens (max |a - b| / max |b| over each step's logits; argmax agreement).

Run from the repository (libpat.so in build/, or PAT_LIBRARY set):
    python3 python/examples/decode_demo.py
    python3 python/examples/decode_demo.py --trees 1,4,64_1024,256,64 1,4,256_1024,256,64 --layers 4
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the pat package of this checkout when not pip-installed

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pat  # noqa: E402

HIDDEN, Q_HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 4096, 32, 8, 128, 14336, 128256
PAGE = 32
ROPE_THETA = 500000.0
DEFAULT_SPEC = HERE / "specs" / "llama3_8b_page32.yaml"
METHODS = ("pat", "direct", "sdpa")


def log(*a):
    """Prints a progress line on stderr."""
    print(*a, file=sys.stderr, flush=True)


class Tree:
    """A workload tree "COUNTS_LENGTHS": level l has counts[l] nodes of lengths[l] tokens;
    request q's node at level l is q // (requests / counts[l]); one request per leaf."""

    def __init__(self, text: str):
        a, _, b = text.partition("_")
        try:
            self.counts = [int(x) for x in a.split(",")]
            self.lengths = [int(x) for x in b.split(",")]
        except ValueError:
            raise SystemExit(f"tree '{text}': expected COUNTS_LENGTHS such as 1,4,64_1024,256,64")
        if len(self.counts) != len(self.lengths) or min(self.counts + self.lengths) < 1:
            raise SystemExit(f"tree '{text}': counts and lengths must be positive, one per level")
        for l in range(len(self.counts) - 1):
            if self.counts[l + 1] % self.counts[l]:
                raise SystemExit(f"tree '{text}': level {l + 1} count is not a multiple of level {l}'s")
            if self.lengths[l] % PAGE:
                raise SystemExit(f"tree '{text}': shared level {l} must be a multiple of the page size {PAGE}")
        self.text = text
        self.num_requests = self.counts[-1]
        self.prompt_len = sum(self.lengths)
        self.unique_tokens = sum(c * n for c, n in zip(self.counts, self.lengths))


class PagedCache:
    """Per-layer K and V page pools, block tables, sequence lengths and a page allocator.

    Prompt pages are filled with random K/V once. Decoding writes only into pages a request
    owns (its leaf pages and pages allocated while decoding), so :meth:`reset` only has to
    restore the block tables, lengths and allocator to replay a run.
    """

    def __init__(self, tree: Tree, layers: int, max_new: int, device, dtype, gen: torch.Generator):
        B = tree.num_requests
        self.tree, self.B = tree, B
        max_len = tree.prompt_len + max_new
        self.max_pages = (max_len + PAGE - 1) // PAGE
        prompt_pages = sum(c * ((n + PAGE - 1) // PAGE) for c, n in zip(tree.counts, tree.lengths))
        leaf_pages = (tree.lengths[-1] + PAGE - 1) // PAGE
        shared_pages = sum(n // PAGE for n in tree.lengths[:-1])
        extra = self.max_pages - shared_pages - leaf_pages
        self.num_pages = prompt_pages + B * extra
        perm = torch.randperm(self.num_pages, generator=gen).to(torch.int32)
        bt = torch.zeros((B, self.max_pages), dtype=torch.int32)
        used = 0
        col = 0
        for l, (c, n) in enumerate(zip(tree.counts, tree.lengths)):
            npg = (n + PAGE - 1) // PAGE
            ids = perm[used:used + c * npg].view(c, npg)
            used += c * npg
            node = torch.arange(B) // (B // c)
            bt[:, col:col + npg] = ids[node]
            col += npg
        self.free = perm[used:]
        self.bt0 = bt
        self.seq0 = torch.full((B,), tree.prompt_len, dtype=torch.int32)
        self.k = [torch.randn(self.num_pages, PAGE, KV_HEADS, HEAD_DIM, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.randn(self.num_pages, PAGE, KV_HEADS, HEAD_DIM, device=device, dtype=dtype) for _ in range(layers)]
        self.device = device
        self.reset()

    def reset(self):
        """Back to the prompt-only state."""
        self.bt = self.bt0.clone()
        self.seq_lens = self.seq0.clone()
        self.next_free = 0
        self.bt_dev = self.bt.to(self.device)

    def append_token(self):
        """Makes room for one new token per request: allocates a page where the last one is
        full, bumps the lengths. Returns (slot mapping, positions) as CUDA int64 tensors."""
        pos = self.seq_lens.to(torch.int64)
        rows = (pos % PAGE == 0).nonzero().flatten()
        if rows.numel():
            m = rows.numel()
            if self.next_free + m > self.free.numel():
                raise RuntimeError("out of KV pages")
            self.bt[rows, pos[rows] // PAGE] = self.free[self.next_free:self.next_free + m]
            self.next_free += m
            self.bt_dev = self.bt.to(self.device, non_blocking=False)
        self.seq_lens += 1
        page = self.bt.gather(1, (pos // PAGE)[:, None].to(torch.int64))[:, 0].to(torch.int64)
        slot = page * PAGE + pos % PAGE
        both = torch.stack([slot, pos]).pin_memory().to(self.device, non_blocking=True)
        return both[0], both[1]


class Model:
    """A Llama-shaped decoder with random weights (fp16)."""

    def __init__(self, layers: int, device, gen_seed: int, vocab: int):
        g = torch.Generator(device=device).manual_seed(gen_seed)
        dt = torch.float16

        def w(i, o):
            return (torch.randn(i, o, device=device, generator=g) / math.sqrt(i)).to(dt)

        self.embed = (torch.randn(vocab, HIDDEN, device=device, generator=g)).to(dt)
        self.layers = []
        for _ in range(layers):
            self.layers.append(dict(wqkv=w(HIDDEN, (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM), wo=w(Q_HEADS * HEAD_DIM, HIDDEN),
                                    wgu=w(HIDDEN, 2 * FFN), wd=w(FFN, HIDDEN),
                                    ln1=torch.ones(HIDDEN, device=device, dtype=dt),
                                    ln2=torch.ones(HIDDEN, device=device, dtype=dt)))
        self.norm = torch.ones(HIDDEN, device=device, dtype=dt)
        self.lm_head = w(HIDDEN, vocab)
        self.inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, device=device, dtype=torch.float32) / HEAD_DIM))


def rms_norm(x, w, eps=1e-5):
    """RMSNorm in fp32, result in x's dtype."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rope(x, cos, sin):
    """Rotary embedding (rotate-half form) of x [B, heads, HEAD_DIM] at cos/sin [B, HEAD_DIM]."""
    xf = x.float()
    x1, x2 = xf[..., : HEAD_DIM // 2], xf[..., HEAD_DIM // 2:]
    rot = torch.cat([-x2, x1], dim=-1)
    return (xf * cos[:, None] + rot * sin[:, None]).to(x.dtype)


class Attention:
    """The three attention methods over one PagedCache."""

    def __init__(self, method: str, ctx, cache: PagedCache):
        self.method, self.ctx, self.cache = method, ctx, cache
        self.plan = None
        self.plan_us = []

    def begin_step(self):
        """Per-step work shared by the layers: the pat plan, or the SDPA mask."""
        c = self.cache
        if self.method in ("pat", "direct"):
            t0 = time.perf_counter()
            self.plan = self.ctx.plan(c.bt, c.seq_lens, q_heads=Q_HEADS, kv_heads=KV_HEADS, num_pages=c.num_pages,
                                      mode="prefix" if self.method == "pat" else "direct")
            self.plan_us.append((time.perf_counter() - t0) * 1e6)
        else:
            lens = c.seq_lens
            self.L = int(lens.max())
            self.npages = (self.L + PAGE - 1) // PAGE
            if int(lens.min()) == self.L:
                self.mask = None
            else:
                ar = torch.arange(self.L)
                self.mask = (ar[None, :] < lens[:, None]).to(c.device)[:, None, None, :]

    def __call__(self, q, layer: int):
        """Attention of q [B, Q_HEADS, HEAD_DIM] over each request's pages of one layer."""
        c = self.cache
        if self.method != "sdpa":
            return self.plan.forward(q, c.k[layer], c.v[layer])
        B = q.shape[0]
        idx = c.bt_dev[:, : self.npages].long()
        k = c.k[layer][idx].view(B, self.npages * PAGE, KV_HEADS, HEAD_DIM)[:, : self.L].transpose(1, 2)
        v = c.v[layer][idx].view(B, self.npages * PAGE, KV_HEADS, HEAD_DIM)[:, : self.L].transpose(1, 2)
        qg = q.view(B, KV_HEADS, Q_HEADS // KV_HEADS, HEAD_DIM)  # q head h reads kv head h // g
        o = F.scaled_dot_product_attention(qg, k, v, attn_mask=self.mask)
        return o.reshape(B, Q_HEADS, HEAD_DIM)


def decode_step(model: Model, cache: PagedCache, attn: Attention, tokens):
    """One decode step for every request: returns fp32 logits [B, vocab]."""
    B = cache.B
    slot, pos = cache.append_token()
    attn.begin_step()
    ang = pos.float()[:, None] * model.inv_freq[None]
    cos = torch.cat([ang.cos(), ang.cos()], -1)
    sin = torch.cat([ang.sin(), ang.sin()], -1)
    x = model.embed[tokens]
    qd, kd = Q_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i, L in enumerate(model.layers):
        h = rms_norm(x, L["ln1"])
        qkv = h @ L["wqkv"]
        q = rope(qkv[:, :qd].view(B, Q_HEADS, HEAD_DIM), cos, sin)
        k = rope(qkv[:, qd:qd + kd].view(B, KV_HEADS, HEAD_DIM), cos, sin)
        v = qkv[:, qd + kd:].view(B, KV_HEADS, HEAD_DIM)
        cache.k[i].view(-1, KV_HEADS, HEAD_DIM).index_copy_(0, slot, k)
        cache.v[i].view(-1, KV_HEADS, HEAD_DIM).index_copy_(0, slot, v)
        a = attn(q, i)
        x = x + a.reshape(B, qd) @ L["wo"]
        h = rms_norm(x, L["ln2"])
        g, u = (h @ L["wgu"]).chunk(2, dim=-1)
        x = x + (F.silu(g) * u) @ L["wd"]
    return (rms_norm(x, model.norm) @ model.lm_head).float()


def run_tree(args, ctx, model: Model, tree_text: str, device) -> dict:
    """All measurements for one batch (tree)."""
    tree = Tree(tree_text)
    B = tree.num_requests
    gen = torch.Generator().manual_seed(args.seed)
    total_steps = max(args.warmup + args.steps, args.check_steps)
    cache = PagedCache(tree, args.layers, total_steps + 1, device, torch.float16, gen)
    tokens = torch.randint(0, args.vocab, (total_steps, B), generator=gen).to(device)
    res = {"tree": tree_text, "batch": B, "prompt_len": tree.prompt_len, "unique_prompt_tokens": tree.unique_tokens,
           "kv_pages": cache.num_pages, "layers": args.layers}
    log(f"== {tree_text}: {B} requests, prompt {tree.prompt_len} tokens ({tree.unique_tokens} unique), "
        f"{cache.num_pages} pages")

    # agreement: the same forced tokens through each method
    logits = {}
    for m in METHODS:
        cache.reset()
        attn = Attention(m, ctx, cache)
        out = []
        with torch.no_grad():
            for t in range(args.check_steps):
                out.append(decode_step(model, cache, attn, tokens[t]))
        torch.cuda.synchronize()
        logits[m] = out
    agree = {}
    for a, b in (("pat", "sdpa"), ("direct", "sdpa"), ("pat", "direct")):
        rel = max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(logits[a], logits[b]))
        arg = sum(float((x.argmax(-1) == y.argmax(-1)).float().mean()) for x, y in zip(logits[a], logits[b]))
        agree[f"{a}_vs_{b}"] = {"max_rel_diff": rel, "argmax_agreement": arg / len(logits[a])}
    res["agreement"] = agree
    del logits

    # TPOT
    res["tpot_ms"], res["plan_us"] = {}, {}
    for m in METHODS:
        cache.reset()
        attn = Attention(m, ctx, cache)
        with torch.no_grad():
            for t in range(args.warmup):
                decode_step(model, cache, attn, tokens[t]).argmax(-1)
            torch.cuda.synchronize()
            attn.plan_us.clear()
            t0 = time.perf_counter()
            for t in range(args.warmup, args.warmup + args.steps):
                nxt = decode_step(model, cache, attn, tokens[t]).argmax(-1)  # noqa: F841 (the sampled tokens)
            torch.cuda.synchronize()
            res["tpot_ms"][m] = (time.perf_counter() - t0) * 1e3 / args.steps
        if attn.plan_us:
            res["plan_us"][m] = statistics.median(attn.plan_us)
        attn.plan = None

    # attention alone, one layer, at the end state of the last run (CUDA events, median)
    res["attn_layer_us"] = {}
    q = torch.randn(B, Q_HEADS, HEAD_DIM, device=device, dtype=torch.float16)
    for m in METHODS:
        attn = Attention(m, ctx, cache)
        attn.begin_step()
        if attn.plan is not None:
            info = attn.plan.info
            res.setdefault("plan_info", {})[m] = {"packs": info.num_packs, "ctas": info.num_ctas,
                                                  "launches": info.num_launches, "merges": info.num_merges,
                                                  "kv_read_over_unique": info.kv_tokens_read / max(info.kv_tokens_unique, 1)}
        times = []
        for i in range(args.attn_iters + 3):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            attn(q, 0)
            e1.record()
            e1.synchronize()
            if i >= 3:
                times.append(e0.elapsed_time(e1) * 1e3)
        res["attn_layer_us"][m] = statistics.median(times)
        attn.plan = None
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", nargs="+", default=["1,4,64_1024,256,64", "1,4,256_1024,256,64"],
                    help="workload trees, one batch size each (default: 64 and 256 requests)")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers (default 4)")
    ap.add_argument("--steps", type=int, default=32, help="timed decode steps (default 32)")
    ap.add_argument("--warmup", type=int, default=4, help="decode steps before timing (default 4)")
    ap.add_argument("--check-steps", type=int, default=8, help="steps compared across methods (default 8)")
    ap.add_argument("--attn-iters", type=int, default=50, help="timed single-layer attention calls (default 50)")
    ap.add_argument("--vocab", type=int, default=VOCAB, help=f"vocabulary size (default {VOCAB})")
    ap.add_argument("--spec", default=str(DEFAULT_SPEC), help="pat spec (fp16, head_dim 128, page 32, GQA 4)")
    ap.add_argument("--cache-dir", default=None, help="pat kernel cache folder (default: $PAT_CACHE_DIR or ~/.cache/pat)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        raise SystemExit("decode_demo: no CUDA device visible to PyTorch")
    device = torch.device("cuda", torch.cuda.current_device())
    t0 = time.perf_counter()
    ctx = pat.Context(args.spec, device.index, cache_dir=args.cache_dir)
    dev = ctx.device_info()
    log(f"pat context on {dev.name} (sm_{dev.arch}, {dev.num_sms} SMs): {time.perf_counter() - t0:.1f} s")
    if (ctx.page_size, ctx.head_dim, ctx.dtype) != (PAGE, HEAD_DIM, "float16"):
        raise SystemExit(f"{args.spec}: the demo needs page_size {PAGE}, head_dim {HEAD_DIM}, fp16")
    model = Model(args.layers, device, args.seed, args.vocab)
    results = {"gpu": dev.name, "torch": torch.__version__, "spec": args.spec, "cases": []}
    for tree in args.trees:
        results["cases"].append(run_tree(args, ctx, model, tree, device))

    print(f"GPU: {dev.name}; Llama-3-8B shapes, {args.layers} layers, page {PAGE}, fp16; "
          f"TPOT over {args.steps} steps after {args.warmup} warm-up steps")
    print(f"{'tree':<24}{'batch':>6}  {'method':<7}{'TPOT ms':>9}{'attn/layer us':>15}{'plan us':>9}")
    for c in results["cases"]:
        for m in METHODS:
            plan = c["plan_us"].get(m)
            print(f"{c['tree']:<24}{c['batch']:>6}  {m:<7}{c['tpot_ms'][m]:>9.3f}{c['attn_layer_us'][m]:>15.1f}"
                  f"{(f'{plan:.0f}' if plan is not None else '-'):>9}")
        for k, v in c["agreement"].items():
            ok = "ok" if v["max_rel_diff"] < 1e-2 else "MISMATCH"
            print(f"{'':<30}{k:<16} max rel diff {v['max_rel_diff']:.2e}  argmax agree {v['argmax_agreement']:.4f}  {ok}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    ctx.close()
    bad = [c for c in results["cases"] for v in c["agreement"].values() if not v["max_rel_diff"] < 1e-2]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
