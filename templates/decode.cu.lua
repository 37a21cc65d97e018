-- decode.cu.lua: one forward kernel for one (spec, tile, GQA ratio). The algorithm lives in
-- device/decode.cuh (mma.sync) or device/decode_wgmma.cuh (warpgroup mma, sm_90a); this file
-- names the constants and instantiates one of them.
local prelude = require("prelude")
local check = prelude.check

-- The wgmma tile: one or two warpgroups of 64 rows; its limits mirror gen/tile.c.
local function wgmma_env(spec, tile, env)
  check(tile.m == 64 or tile.m == 128, "tile.m", "a wgmma tile has 64 or 128 rows")
  check(tile.warps == tile.m // 16, "tile.warps", "a wgmma tile has 4 warps per 64 rows")
  check(tile.n == 64 or tile.n == 128, "tile.n", "a wgmma tile takes 64 or 128 tokens a step")
  check(tile.stages >= 3, "tile.stages", "a wgmma tile needs at least 3 stages")
  check(spec.head_dim == 128, "spec.head_dim", "a wgmma tile needs head_dim 128")
  env.header, env.body = "pat/decode_wgmma.cuh", "pat_decode_wgmma"
  env.layout = string.format("%d warpgroups of 64 rows (wgmma, sm_90a)", tile.m // 64)
  env.extra = ""
end

-- The mma.sync tile: warps along the rows (16 or 32 rows each) and along the tokens.
local function mma_sync_env(spec, tile, gqa, env)
  local warp_rows = tile.warp_rows or 16
  check(warp_rows == 16 or warp_rows == 32, "tile.warp_rows", "must be 16 or 32")
  check(tile.m % warp_rows == 0, "tile.m", "must be a multiple of warp_rows")
  check(tile.warps % (tile.m // warp_rows) == 0, "tile.warps", "must cover m/warp_rows row blocks")
  local warps_m = tile.m // warp_rows
  env.header, env.body = "pat/decode.cuh", "pat_decode"
  env.layout = string.format("%d x %d warps", warps_m, tile.warps // warps_m)
  env.extra = prelude.sub_text([[
  static constexpr int WARPS_M = ${warps_m};  // warps along the rows, ${warp_rows} rows each
  static constexpr int WARPS_N = ${warps_n};  // warps along the tokens of a step
  static constexpr bool Q_IN_REGS = ${q_in_regs};  // Q fragments held in registers
]], { warps_m = warps_m, warp_rows = warp_rows, warps_n = tile.warps // warps_m,
      q_in_regs = spec.head_dim <= 128 and "true" or "false" })
end

return function(ctx)
  local spec, tile, gqa = ctx.spec, ctx.tile, ctx.gqa
  check(gqa <= tile.m, "gqa", "must not exceed tile.m")
  local env = {
    name = ctx.kernel, elem = prelude.elem_type[spec.dtype], dtype = spec.dtype,
    head_dim = spec.head_dim, page_size = spec.page_size, gqa = gqa,
    m = tile.m, n = tile.n, warps = tile.warps, stages = tile.stages, threads = 32 * tile.warps,
    smem = ctx.smem_bytes, queries = tile.m // gqa,
  }
  if tile.wgmma == 1 then wgmma_env(spec, tile, env) else mma_sync_env(spec, tile, gqa, env) end
  local out = prelude.buffer()
  out:banner(ctx, "templates/decode.cu.lua", {
    prelude.sub_text("Forward kernel: ${dtype}, head_dim ${head_dim}, page ${page_size}, GQA ${gqa} (${queries} queries a CTA).", env),
    prelude.sub_text("Tile: ${m} rows x ${n} tokens a step, ${warps} warps (${layout}), ${stages} stages, ${smem} B shared memory.", env),
  })
  out:sub([[
#include "${header}"

namespace {
struct config {
  typedef ${elem} Elem;  // q, k, v and out
  static constexpr int HEAD_DIM = ${head_dim};
  static constexpr int PAGE_SIZE = ${page_size};  // tokens per KV page
  static constexpr int GQA = ${gqa};  // q heads per kv head
  static constexpr int TILE_M = ${m};  // query rows per CTA: queries x GQA
  static constexpr int TILE_N = ${n};  // KV tokens per pipeline step
  static constexpr int STAGES = ${stages};  // K/V tiles in the cp.async ring
${extra}};
typedef ${body}<config> tile;
static_assert(tile::SMEM_BYTES == ${smem}, "shared memory differs from gen/tile.c");
}  // namespace

extern "C" __global__ void __launch_bounds__(${threads})
${name}(const pat_fwd_params p)
{
  extern __shared__ __align__(1024) unsigned char smem[];
  pdl_signal_dependents();  // the next launch of the chain may share the GPU with this one
  tile::run(p, smem, blockIdx.x, blockIdx.y);  // grid: packs x kv heads
  // One CTA outwaits the launch before: this launch completes after it, and the merge,
  // which waits for the last forward launch, sees every partial.
  if (blockIdx.x == 0 && blockIdx.y == 0) pdl_wait_previous();
}
]], env)
  return out:text()
end
