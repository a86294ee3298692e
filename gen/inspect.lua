-- inspect: the model as PyTorch prints it, then its parameters and buffers.
local util = require "util"
local nn = require "nn"

local inspect = {}

local function shape_text(shape)
  local parts = {}
  for i, d in ipairs(shape) do parts[i] = tostring(d) end
  return "[" .. table.concat(parts, ", ") .. "]"
end
inspect.shape_text = shape_text

local function table_lines(rows, header)
  local widths = {}
  for i, h in ipairs(header) do widths[i] = #h end
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i], utf8.len(c) or #c) end
  end
  local function line(r)
    local parts = {}
    for i, c in ipairs(r) do
      local pad = widths[i] - (utf8.len(c) or #c)
      -- numbers right-aligned, text left-aligned
      if i == #r then parts[i] = string.rep(" ", pad) .. c else parts[i] = c .. string.rep(" ", pad) end
    end
    return "  " .. table.concat(parts, "  ")
  end
  local out = { line(header) }
  for _, r in ipairs(rows) do out[#out + 1] = line(r) end
  return out
end

-- Totals over the state: parameters and buffer values.
function inspect.totals(g)
  local nparams, nbuf = 0, 0
  for _, p in ipairs(g.params) do nparams = nparams + util.numel(p.shape) end
  for _, b in ipairs(g.buffers) do nbuf = nbuf + util.numel(b.shape) end
  return nparams, nbuf
end

function inspect.text(g)
  local out = { nn.repr(g.model), "" }
  local rows = {}
  for _, p in ipairs(g.params) do rows[#rows + 1] = { p.name, shape_text(p.shape), util.commas(util.numel(p.shape)) } end
  out[#out + 1] = "Parameters"
  for _, l in ipairs(table_lines(rows, { "name", "shape", "count" })) do out[#out + 1] = l end
  if #g.buffers > 0 then
    rows = {}
    for _, b in ipairs(g.buffers) do
      rows[#rows + 1] = { b.name, shape_text(b.shape), b.dtype == "int64" and "int64" or "float32", util.commas(util.numel(b.shape)) }
    end
    out[#out + 1] = ""
    out[#out + 1] = "Buffers"
    for _, l in ipairs(table_lines(rows, { "name", "shape", "dtype", "count" })) do out[#out + 1] = l end
  end
  local np, nb = inspect.totals(g)
  out[#out + 1] = ""
  out[#out + 1] = string.format("Total: %s parameters in %d tensors (%s as fp32); %s buffer values in %d tensors",
    util.commas(np), #g.params, util.human_bytes(np * 4), util.commas(nb), #g.buffers)
  -- train.freeze's parameters (requires_grad = False), so that its patterns can be checked
  local frozen, count = {}, 0
  for _, p in ipairs(g.params) do
    if g.frozen and g.frozen[p.name] then frozen[#frozen + 1] = p.name; count = count + util.numel(p.shape) end
  end
  if #frozen > 0 then
    out[#out + 1] = string.format("Frozen (train.freeze): %s parameters in %d tensors, %s trainable: %s",
      util.commas(count), #frozen, util.commas(np - count), table.concat(frozen, ", "))
  end
  if #g.order > 1 then   -- methods beside forward (Fabric's mark_forward_method): gen/entries.lua
    out[#out + 1] = ""
    out[#out + 1] = "Entry points:"
    for _, e in ipairs(require("entries").describe(g)) do
      out[#out + 1] = string.format("  %s  <- %s:%d  %s", e.name, e.where.file, e.where.line, e.what)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

return inspect
