"""GPU tests: the binding's output against a PyTorch fp32 reference on random data.

Skipped, with the reason printed (pytest -rs), when PyTorch, a CUDA device, libpat.so or
the CUDA driver is missing. PAT_CACHE_DIR chooses the kernel cache as for the library.
"""
from __future__ import annotations

import math
import os
import types

import pytest

from conftest import DEMO_SPEC

import pat
from pat import vllm_backend

torch = pytest.importorskip("torch", reason="PyTorch is not installed: GPU tests skipped")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to PyTorch: GPU tests skipped", allow_module_level=True)

PAGE, H, KH, D = 32, 32, 8, 128
TOL = 5e-3


@pytest.fixture(scope="module")
def ctx():
    try:
        c = pat.Context(DEMO_SPEC, 0, cache_dir=os.environ.get("PAT_CACHE_DIR"))
    except pat.PatLibraryNotFound as e:
        pytest.skip(f"libpat.so not available: {e}")
    except pat.PatNoDriverError as e:
        pytest.skip(f"no usable CUDA driver/device: {e}")
    yield c
    c.close()


def make_batch(num_queries, prefix_pages, own_tokens, num_pages, seed):
    """Block tables where every query shares `prefix_pages` pages, then owns pages for
    `own_tokens[i]` more tokens (ragged). Returns (block_table int32 [n, max], seq_lens)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_pages, generator=g).to(torch.int32)
    used = 0
    shared = perm[:prefix_pages].tolist()
    used += prefix_pages
    rows, lens = [], []
    for i in range(num_queries):
        need = (own_tokens[i] + PAGE - 1) // PAGE
        rows.append(shared + perm[used:used + need].tolist())
        used += need
        lens.append(prefix_pages * PAGE + own_tokens[i])
    width = max(len(r) for r in rows) + 2
    bt = torch.zeros((num_queries, width), dtype=torch.int32)
    for i, r in enumerate(rows):
        bt[i, :len(r)] = torch.tensor(r, dtype=torch.int32)
    return bt, torch.tensor(lens, dtype=torch.int32)


def reference(q, k_cache, v_cache, bt, seq_lens, scale):
    """fp32 attention of each query over its pages (GQA: q head h reads kv head h // (H/KH))."""
    n, h, d = q.shape
    kvh = k_cache.shape[2]
    out = torch.empty(n, h, d, dtype=torch.float32, device=q.device)
    for i in range(n):
        L = int(seq_lens[i])
        pages = bt[i, : (L + PAGE - 1) // PAGE].long().to(q.device)
        k = k_cache[pages].reshape(-1, kvh, d)[:L].float().repeat_interleave(h // kvh, dim=1)  # [L, h, d]
        v = v_cache[pages].reshape(-1, kvh, d)[:L].float().repeat_interleave(h // kvh, dim=1)
        s = torch.einsum("hd,lhd->hl", q[i].float(), k) * scale
        out[i] = torch.einsum("hl,lhd->hd", torch.softmax(s, dim=-1), v)
    return out


def rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-20))


@pytest.mark.parametrize("mode", ["prefix", "direct"])
@pytest.mark.parametrize("n,prefix_pages", [(1, 3), (7, 40), (40, 64)])
def test_forward_matches_fp32_reference(ctx, mode, n, prefix_pages):
    num_pages = prefix_pages + n * 5 + 8
    own = [1 + (37 * i) % (4 * PAGE) for i in range(n)]
    bt, seq_lens = make_batch(n, prefix_pages, own, num_pages, seed=n)
    dev = torch.device("cuda", 0)
    k_cache = torch.randn(num_pages, PAGE, KH, D, device=dev).half()
    v_cache = torch.randn(num_pages, PAGE, KH, D, device=dev).half()
    q = torch.randn(n, H, D, device=dev).half()
    plan = ctx.plan(bt, seq_lens, q_heads=H, kv_heads=KH, num_pages=num_pages, mode=mode)
    out = plan.forward(q, k_cache, v_cache)
    torch.cuda.synchronize()
    ref = reference(q, k_cache, v_cache, bt, seq_lens, 1 / math.sqrt(D))
    err = rel_err(out, ref)
    info = plan.info
    print(f"{mode} n={n} prefix_pages={prefix_pages}: rel_err {err:.2e}, packs {info.num_packs}, "
          f"KV read/unique {info.kv_tokens_read / max(info.kv_tokens_unique, 1):.2f}")
    assert math.isfinite(err) and err < TOL
    plan.close()


def test_strided_q_workspace_scale_and_side_stream(ctx):
    n, num_pages = 6, 64
    bt, seq_lens = make_batch(n, 8, [5, 33, 64, 1, 90, 31], num_pages, seed=3)
    dev = torch.device("cuda", 0)
    k_cache = torch.randn(num_pages, PAGE, KH, D, device=dev).half()
    v_cache = torch.randn(num_pages, PAGE, KH, D, device=dev).half()
    qkv = torch.randn(n, (H + 2 * KH) * D, device=dev).half()
    q = qkv[:, : H * D]  # rows (H + 2KH) * D apart, as a fused QKV projection leaves them
    out = torch.full((n, H * D), float("nan"), device=dev).half()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        plan = ctx.plan(bt, seq_lens, q_heads=H, kv_heads=KH, num_pages=num_pages)
        ws = torch.empty(plan.workspace_size + 16, dtype=torch.uint8, device=dev)
        plan.forward(q, k_cache, v_cache, out, scale=0.05, workspace=ws)
    s.synchronize()
    ref = reference(q.view(n, H, D), k_cache, v_cache, bt, seq_lens, 0.05)
    assert rel_err(out.view(n, H, D), ref) < TOL


def test_library_errors_become_exceptions(ctx):
    bt, seq_lens = make_batch(2, 2, [3, 4], 16, seed=1)
    bad = bt.clone()
    bad[1, 0] = 99
    with pytest.raises(pat.PatArgumentError) as ei:
        ctx.plan(bad, seq_lens, q_heads=H, kv_heads=KH, num_pages=16)
    print("library says:", ei.value)
    with pytest.raises(pat.PatSpecError, match="GQA"):
        ctx.plan(bt, seq_lens, q_heads=16, kv_heads=8, num_pages=16)
    too_long = seq_lens.clone()
    too_long[0] = bt.shape[1] * PAGE + 1
    with pytest.raises(pat.PatArgumentError):
        ctx.plan(bt, too_long, q_heads=H, kv_heads=KH, num_pages=16)
    k = torch.empty(16, PAGE, KH, D, device="cuda").half()
    plan = ctx.plan(bt, seq_lens, q_heads=H, kv_heads=KH, num_pages=16)
    with pytest.raises(pat.PatArgumentError, match="^k_cache: expected dtype float16, got float32"):
        plan.forward(torch.empty(2, H, D, device="cuda").half(), k.float(), k, None)
    with pytest.raises(pat.PatArgumentError, match="^q: expected a tensor on cuda:0, got one on cpu"):
        plan.forward(torch.empty(2, H, D).half(), k, k, None)
    with pytest.raises(pat.PatArgumentError, match="^v_cache: must be contiguous"):
        plan.forward(torch.empty(2, H, D, device="cuda").half(), k, k.transpose(1, 2).contiguous().transpose(1, 2),
                     None)


def test_vllm_backend_decode_step(ctx):
    """A decode step through PatAttentionImpl.forward with metadata built as vLLM builds it."""
    vllm_backend.configure(spec_path=DEMO_SPEC, cache_dir=os.environ.get("PAT_CACHE_DIR"))
    n, num_blocks, max_blocks = 9, 128, 16
    bt, seq_lens = make_batch(n, 6, [1 + 29 * i % 200 for i in range(n)], num_blocks, seed=7)
    bt_full = torch.zeros((32, max_blocks), dtype=torch.int32)  # vLLM's persistent table
    bt_full[:n, : bt.shape[1]] = bt
    dev = torch.device("cuda", 0)
    kv = torch.randn(2, num_blocks, PAGE, KH, D, device=dev).half()
    pos = seq_lens.long() - 1
    slot = bt.long().gather(1, (pos // PAGE)[:, None])[:, 0] * PAGE + pos % PAGE
    common = types.SimpleNamespace(
        num_reqs=n, num_actual_tokens=n, max_query_len=1, max_seq_len=int(seq_lens.max()),
        query_start_loc=torch.arange(n + 1, dtype=torch.int32, device=dev),
        query_start_loc_cpu=torch.arange(n + 1, dtype=torch.int32),
        seq_lens=seq_lens.to(dev), seq_lens_cpu=seq_lens, block_table_tensor=bt_full[:n].to(dev),
        slot_mapping=slot.to(dev), causal=True)
    builder = vllm_backend.PatMetadataBuilder(types.SimpleNamespace(block_size=PAGE), ["l0"], None, dev)
    md = builder.build(0, common)
    impl = vllm_backend.PatAttentionImpl(H, D, 1 / math.sqrt(D), KH, None, None, "auto")
    padded = n + 7  # vLLM pads the token count to a CUDA-graph size
    query = torch.randn(padded, H, D, device=dev).half()
    key = torch.randn(padded, KH, D, device=dev).half()
    value = torch.randn(padded, KH, D, device=dev).half()
    output = torch.zeros(padded, H, D, device=dev).half()
    impl.forward(None, query, key, value, kv, md, output)
    torch.cuda.synchronize()
    for i in range(n):  # the new token was written where slot_mapping says
        p, o = int(slot[i]) // PAGE, int(slot[i]) % PAGE
        assert torch.equal(kv[0, p, o], key[i]) and torch.equal(kv[1, p, o], value[i])
    ref = reference(query[:n], kv[0], kv[1], bt, seq_lens, 1 / math.sqrt(D))
    err = rel_err(output[:n], ref)
    print(f"vllm backend: rel_err {err:.2e}")
    assert err < TOL
    assert float(output[n:].abs().max()) == 0.0  # padding rows untouched


def test_tuning_note_names_the_table_or_the_cost_model(ctx):
    note = ctx.tuning
    assert "cost model" in note or "tuned on" in note, note
