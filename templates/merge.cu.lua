-- merge.cu.lua: the merge kernel of a spec: combines a query's splits by their LSE.
local prelude = require("prelude")

return function(ctx)
  local spec = ctx.spec
  local env = {
    name = ctx.kernel, elem = prelude.elem_type[spec.dtype], dtype = spec.dtype,
    head_dim = spec.head_dim, threads = ctx.threads,
  }
  local out = prelude.buffer()
  out:banner(ctx, "templates/merge.cu.lua", {
    prelude.sub_text("Merge kernel: ${dtype}, head_dim ${head_dim}; a CTA per (query, group of output chunks), ${threads} threads.", env),
  })
  out:sub([[
#include "pat/merge.cuh"

extern "C" __global__ void __launch_bounds__(${threads})
${name}(const pat_merge_params p)
{
  pat_merge_run<${elem}, ${head_dim}>(p);
}
]], env)
  return out:text()
end
