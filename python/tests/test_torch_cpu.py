"""Conversion and checks with real PyTorch / NumPy host tensors (skipped without them; no GPU)."""
from __future__ import annotations

import types

import pytest

from conftest import FakeTensor

import pat
from pat import vllm_backend


torch = pytest.importorskip("torch")


def _vllm_step(num_reqs=5, max_num_reqs=16, block_size=16, max_blocks=12, seed=0):
    """Tensors built as vLLM 0.10's GPU model runner builds them for a decode step:
    a persistent int32 block table [max_num_reqs, max_blocks] sliced to num_reqs rows,
    int32 seq_lens and query_start_loc slices, int64 slot_mapping of the new tokens."""
    g = torch.Generator().manual_seed(seed)
    bt_buf = torch.zeros((max_num_reqs, max_blocks), dtype=torch.int32)
    seq_lens_buf = torch.zeros(max_num_reqs, dtype=torch.int32)
    qsl_buf = torch.zeros(max_num_reqs + 1, dtype=torch.int32)
    nxt = 1
    shared = [nxt, nxt + 1]  # a 2-block shared prefix
    nxt += 2
    for i in range(num_reqs):
        s = 2 * block_size + int(torch.randint(1, 3 * block_size, (1,), generator=g))
        need = (s + block_size - 1) // block_size
        row = shared + list(range(nxt, nxt + need - 2))
        nxt += need - 2
        bt_buf[i, :need] = torch.tensor(row, dtype=torch.int32)
        seq_lens_buf[i] = s
    qsl_buf[: num_reqs + 1] = torch.arange(num_reqs + 1, dtype=torch.int32)
    bt = bt_buf[:num_reqs]
    seq_lens = seq_lens_buf[:num_reqs]
    pos = seq_lens.long() - 1
    slot = bt.long().gather(1, (pos // block_size)[:, None])[:, 0] * block_size + pos % block_size
    return types.SimpleNamespace(num_reqs=num_reqs, num_actual_tokens=num_reqs, max_query_len=1,
                                 max_seq_len=int(seq_lens.max()), query_start_loc=qsl_buf[: num_reqs + 1],
                                 query_start_loc_cpu=qsl_buf[: num_reqs + 1], seq_lens=seq_lens,
                                 seq_lens_cpu=seq_lens, block_table_tensor=bt, slot_mapping=slot, causal=True,
                                 num_blocks=nxt)


def test_conversion_of_vllm_tensors_is_zero_copy():
    m = _vllm_step()
    b = vllm_backend.decode_batch_from_vllm(m.block_table_tensor, m.seq_lens_cpu, block_size=16,
                                            num_reqs=m.num_reqs, query_start_loc=m.query_start_loc_cpu)
    assert b.block_table.ptr == m.block_table_tensor.data_ptr() and b.block_table.row_stride == 12
    assert b.seq_lens.ptr == m.seq_lens.data_ptr()
    assert b.block_table.tolist() == m.block_table_tensor.tolist() and b.seq_lens.tolist() == m.seq_lens.tolist()
    want = vllm_backend.slot_mapping_for_decode(m.block_table_tensor, m.seq_lens, 16)
    assert want == m.slot_mapping.tolist()
    md = vllm_backend.PatMetadataBuilder(types.SimpleNamespace(block_size=16)).build(0, m)
    assert md.batch.num_reqs == 5 and md.max_seq_len == m.max_seq_len


def test_conversion_rejects_wrong_dtypes_and_prefill():
    m = _vllm_step()
    with pytest.raises(pat.PatArgumentError, match="^block_table: expected dtype int32, got int64"):
        vllm_backend.decode_batch_from_vllm(m.block_table_tensor.long(), m.seq_lens, block_size=16)
    with pytest.raises(pat.PatArgumentError, match="^seq_lens: expected 1 dimensions"):
        vllm_backend.decode_batch_from_vllm(m.block_table_tensor, m.seq_lens[None], block_size=16)
    qsl = torch.tensor([0, 1, 2, 5, 6, 7], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="request 2 has 3 query tokens"):
        vllm_backend.decode_batch_from_vllm(m.block_table_tensor, m.seq_lens, block_size=16, query_start_loc=qsl)


def _vllm_kv_cache(num_blocks, block_size, kvh, hs, dtype=torch.float16, layout="NHD"):
    """A cache tensor as vLLM 0.10 allocates it: a raw int8 buffer viewed as the backend's
    shape in the stride order of the layout."""
    raw = torch.zeros(2 * num_blocks * block_size * kvh * hs * 2, dtype=torch.int8)
    if layout == "NHD":
        return raw.view(dtype).view(2, num_blocks, block_size, kvh, hs)
    return raw.view(dtype).view(2, num_blocks, kvh, block_size, hs).permute(0, 1, 3, 2, 4)


def test_split_and_write_kv_cache():
    m = _vllm_step()
    kv = _vllm_kv_cache(m.num_blocks, 16, 2, 64)
    k_cache, v_cache = vllm_backend.split_kv_cache(kv, 2, 64)
    assert k_cache.data_ptr() == kv.data_ptr() and v_cache.is_contiguous()
    key = torch.randn(m.num_reqs + 3, 2, 64).half()  # padded, as vLLM pads to a graph size
    value = torch.randn(m.num_reqs + 3, 2, 64).half()
    vllm_backend.write_kv_cache(key, value, k_cache, v_cache, m.slot_mapping)
    for i in range(m.num_reqs):
        pos = int(m.seq_lens[i]) - 1
        page = int(m.block_table_tensor[i, pos // 16])
        assert torch.equal(k_cache[page, pos % 16], key[i]) and torch.equal(v_cache[page, pos % 16], value[i])
    with pytest.raises(pat.PatArgumentError, match="^kv_cache: each half must be contiguous"):
        vllm_backend.split_kv_cache(_vllm_kv_cache(4, 16, 2, 64, layout="HND"))


def test_forward_rejects_cpu_and_noncontiguous_torch_tensors():
    from test_pure import _plan

    p = _plan()
    q = torch.empty(4, 32, 128, dtype=torch.float16)
    kc = torch.empty(10, 32, 8, 128, dtype=torch.float16)
    with pytest.raises(pat.PatArgumentError, match="^q: expected a tensor on cuda:0, got one on cpu"):
        p.forward(q, kc, kc, q)
    with pytest.raises(pat.PatArgumentError, match="^q: expected dtype float16, got float32"):
        p.forward(q.float(), kc, kc, q)
    assert FakeTensor  # the pure tests cover the CUDA-side checks with stand-ins
