-- decode.cu.lua: one forward kernel for one (spec, tile, GQA ratio). The algorithm lives in
-- device/decode.cuh; this file names the constants and instantiates it.
local prelude = require("prelude")
local check = prelude.check

return function(ctx)
  local spec, tile, gqa = ctx.spec, ctx.tile, ctx.gqa
  local warp_rows = tile.warp_rows or 16
  check(warp_rows == 16 or warp_rows == 32, "tile.warp_rows", "must be 16 or 32")
  check(tile.m % warp_rows == 0, "tile.m", "must be a multiple of warp_rows")
  check(tile.warps % (tile.m // warp_rows) == 0, "tile.warps", "must cover m/warp_rows row blocks")
  check(gqa <= tile.m, "gqa", "must not exceed tile.m")
  local warps_m = tile.m // warp_rows
  local env = {
    name = ctx.kernel, elem = prelude.elem_type[spec.dtype], dtype = spec.dtype,
    head_dim = spec.head_dim, page_size = spec.page_size, gqa = gqa,
    m = tile.m, n = tile.n, warps = tile.warps, warps_m = warps_m, warp_rows = warp_rows,
    warps_n = tile.warps // warps_m, stages = tile.stages, threads = 32 * tile.warps,
    smem = ctx.smem_bytes, q_in_regs = spec.head_dim <= 128 and "true" or "false",
    queries = tile.m // gqa,
  }
  local out = prelude.buffer()
  out:banner(ctx, "templates/decode.cu.lua", {
    prelude.sub_text("Forward kernel: ${dtype}, head_dim ${head_dim}, page ${page_size}, GQA ${gqa} (${queries} queries a CTA).", env),
    prelude.sub_text("Tile: ${m} rows x ${n} tokens a step, ${warps} warps (${warps_m} x ${warps_n}), ${stages} stages, ${smem} B shared memory.", env),
  })
  out:sub([[
#include "pat/decode.cuh"

namespace {
struct config {
  typedef ${elem} Elem;  // q, k, v and out
  static constexpr int HEAD_DIM = ${head_dim};
  static constexpr int PAGE_SIZE = ${page_size};  // tokens per KV page
  static constexpr int GQA = ${gqa};  // q heads per kv head
  static constexpr int TILE_M = ${m};  // query rows per CTA: queries x GQA
  static constexpr int TILE_N = ${n};  // KV tokens per pipeline step
  static constexpr int WARPS_M = ${warps_m};  // warps along the rows, ${warp_rows} rows each
  static constexpr int WARPS_N = ${warps_n};  // warps along the tokens of a step
  static constexpr int STAGES = ${stages};  // K/V tiles in the cp.async ring
  static constexpr bool Q_IN_REGS = ${q_in_regs};  // Q fragments held in registers
};
typedef pat_decode<config> tile;
static_assert(tile::SMEM_BYTES == ${smem}, "shared memory differs from gen/tile.c");
}  // namespace

extern "C" __global__ void __launch_bounds__(${threads})
${name}(const pat_fwd_params p)
{
  extern __shared__ __align__(128) unsigned char smem[];
  tile::run(p, smem);
}
]], env)
  return out:text()
end
