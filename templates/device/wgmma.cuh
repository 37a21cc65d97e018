// wgmma.cuh: the sm_90a warpgroup mma (wgmma) building blocks: shared-memory matrix
// descriptors for the 128-byte swizzle, fences, and the instruction shapes the wgmma forward
// kernel issues. A warpgroup is 4 consecutive warps; every wgmma is issued by its 128 threads
// together. Only for kernels compiled for sm_90a.
#pragma once
#include "pat/mma.cuh"

typedef unsigned long long u64;

// Byte offset of 16-byte chunk c (0..15) of row r in a [rows][128 elements] tile stored as two
// 64-column halves, each [rows][128 bytes] with the 128-byte swizzle (chunk ^ row % 8): the
// canonical layout wgmma reads, both K-major (Q, K) and MN-major (V). Tiles start 1 KiB-aligned.
__device__ __forceinline__ u32 sw128(u32 r, u32 c, u32 rows)
{
  return (c >> 3) * rows * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4);
}

// Shared-memory matrix descriptor: start address, leading and stride byte offsets (in 16-byte
// units), layout type 1 = 128-byte swizzle.
__host__ __device__ __forceinline__ constexpr u64 wgmma_desc(u32 saddr, u32 lbo, u32 sbo)
{
  return (u64)((saddr & 0x3FFFF) >> 4) | ((u64)((lbo >> 4) & 0x3FFF) << 16) |
         ((u64)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}
// A descriptor as its two words. An offset into the tile (a multiple of 16 bytes; the tile
// stays inside shared memory, below 256 KiB) adds to the low word's start-address field
// alone, so a k-slice's descriptor costs one add instead of the whole encoding.
struct wgmma_desc_words {
  u32 lo, hi;
};
__host__ __device__ __forceinline__ constexpr wgmma_desc_words wgmma_desc_split(u32 saddr, u32 lbo, u32 sbo)
{
  return {(u32)wgmma_desc(saddr, lbo, sbo), (u32)(wgmma_desc(saddr, lbo, sbo) >> 32)};
}
__host__ __device__ __forceinline__ constexpr u64 wgmma_desc_at(wgmma_desc_words w, u32 offset)
{
  return (u64)w.hi << 32 | (w.lo + (offset >> 4));
}
static_assert(wgmma_desc_at(wgmma_desc_split(0x8400, 16, 1024), 0x2060) == wgmma_desc(0x8400 + 0x2060, 16, 1024) &&
                  wgmma_desc_at(wgmma_desc_split(0x1c400, 8192, 1024), 0x3c00) ==
                      wgmma_desc(0x1c400 + 0x3c00, 8192, 1024),
              "an offset adds to the start-address field alone");

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed wgmma groups of this warpgroup are still running.
template <int N> __device__ __forceinline__ void wgmma_wait()
{
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// An in-flight wgmma still writes its accumulators: these empty asm statements keep the
// compiler from reading or moving them across the wait that precedes them.
template <int R> __device__ __forceinline__ void fence_regs(float (&d)[R])
{
#pragma unroll
  for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// cp.async writes shared memory through the generic proxy, wgmma reads it through the async
// proxy: this fence, after the copies land and before the barrier, orders the two.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Accumulator operand lists: R floats, read and written.
#define PAT_ACC4(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define PAT_ACC16(d, i) PAT_ACC4(d, i), PAT_ACC4(d, i + 4), PAT_ACC4(d, i + 8), PAT_ACC4(d, i + 12)
#define PAT_ACC32(d, i) PAT_ACC16(d, i), PAT_ACC16(d, i + 16)
#define PAT_ACC64(d) PAT_ACC32(d, 0), PAT_ACC32(d, 32)
#define PAT_REGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define PAT_REGS64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
// One wgmma with the scale-d predicate: D = A B (+ D when the predicate is set).
#define PAT_WGMMA(shape, type, d, a, b, tail) \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %" #tail ", 0;\n" \
  "wgmma.mma_async.sync.aligned." shape ".f32." type "." type " " d ", " a ", " b ", p, 1, 1"

// S = Q K^T (+ S when accumulate), both operands K-major in shared memory: m64n64k16 (32
// accumulators a thread) or m64n128k16 (64). accumulate = 0 for the first k-slice, so no
// zeroed registers are read.
template <class E> __device__ __forceinline__ void wgmma_ss(float (&d)[32], u64 da, u64 db, int accumulate)
{
  if constexpr (E::BF16)
    asm volatile(PAT_WGMMA("m64n64k16", "bf16", PAT_REGS32, "%32", "%33", 34) ", 0, 0;\n}\n"
                 : PAT_ACC32(d, 0) : "l"(da), "l"(db), "r"(accumulate));
  else
    asm volatile(PAT_WGMMA("m64n64k16", "f16", PAT_REGS32, "%32", "%33", 34) ", 0, 0;\n}\n"
                 : PAT_ACC32(d, 0) : "l"(da), "l"(db), "r"(accumulate));
}
template <class E> __device__ __forceinline__ void wgmma_ss(float (&d)[64], u64 da, u64 db, int accumulate)
{
  if constexpr (E::BF16)
    asm volatile(PAT_WGMMA("m64n128k16", "bf16", PAT_REGS64, "%64", "%65", 66) ", 0, 0;\n}\n"
                 : PAT_ACC64(d) : "l"(da), "l"(db), "r"(accumulate));
  else
    asm volatile(PAT_WGMMA("m64n128k16", "f16", PAT_REGS64, "%64", "%65", 66) ", 0, 0;\n}\n"
                 : PAT_ACC64(d) : "l"(da), "l"(db), "r"(accumulate));
}

// S = Q K^T (+ S when accumulate) with Q from registers (the m16n8k16 A fragments of each
// warp's 16 rows, as P below) and K K-major in shared memory: m64n64k16 or m64n128k16.
// Q in registers halves the shared-memory bytes a k-slice of S reads.
template <class E> __device__ __forceinline__ void wgmma_rs_k(float (&d)[32], const u32 (&a)[4], u64 db, int accumulate)
{
  if constexpr (E::BF16)
    asm volatile(PAT_WGMMA("m64n64k16", "bf16", PAT_REGS32, "{%32, %33, %34, %35}", "%36", 37) ", 0;\n}\n"
                 : PAT_ACC32(d, 0) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
  else
    asm volatile(PAT_WGMMA("m64n64k16", "f16", PAT_REGS32, "{%32, %33, %34, %35}", "%36", 37) ", 0;\n}\n"
                 : PAT_ACC32(d, 0) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
template <class E> __device__ __forceinline__ void wgmma_rs_k(float (&d)[64], const u32 (&a)[4], u64 db, int accumulate)
{
  if constexpr (E::BF16)
    asm volatile(PAT_WGMMA("m64n128k16", "bf16", PAT_REGS64, "{%64, %65, %66, %67}", "%68", 69) ", 0;\n}\n"
                 : PAT_ACC64(d) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
  else
    asm volatile(PAT_WGMMA("m64n128k16", "f16", PAT_REGS64, "{%64, %65, %66, %67}", "%68", 69) ", 0;\n}\n"
                 : PAT_ACC64(d) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}

// O += P V, m64n128k16: P from registers (the m16n8k16 A fragments of each warp's 16 rows),
// V from shared memory as [tokens][dims], i.e. MN-major (transposed B).
template <class E> __device__ __forceinline__ void wgmma_rs(float (&d)[64], const u32 (&a)[4], u64 db)
{
  if constexpr (E::BF16)
    asm volatile(PAT_WGMMA("m64n128k16", "bf16", PAT_REGS64, "{%64, %65, %66, %67}", "%68", 69) ", 1;\n}\n"
                 : PAT_ACC64(d) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
  else
    asm volatile(PAT_WGMMA("m64n128k16", "f16", PAT_REGS64, "{%64, %65, %66, %67}", "%68", 69) ", 1;\n}\n"
                 : PAT_ACC64(d) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
}
