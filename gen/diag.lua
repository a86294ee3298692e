-- diag: a user's mistakes as values.  Every constructor and traced op records
-- where in the spec it came from; errors are collected per stage, sorted,
-- de-duplicated and raised together at the stage boundary as one table that the
-- driver prints (never a traceback: a traceback means loom itself is wrong).
local diag = {}

local spec_source = nil     -- "@specs/paw.lua" while a spec is being run/traced
local spec_lines = {}       -- its text, line by line, for excerpts
local collected = {}

-- A spec function that ends in a tail call (`return bce(m(b), b.target)`) leaves
-- no frame on the stack, so a line hook remembers, for each stack depth, the last
-- spec line run there; a tail-called frame at that depth stands in for it.
local line_at_depth = {}

local function stack_depth()
  local lo, hi = 1, 2
  while debug.getinfo(hi, "l") do lo = hi; hi = hi * 2 end
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if debug.getinfo(mid, "l") then lo = mid else hi = mid end
  end
  return lo
end

-- Entries deeper than a running or returning spec frame are stale: clear them.
local function line_hook(event, line)
  local info = debug.getinfo(2, "S")
  if info.source ~= spec_source then return end
  local depth = stack_depth() - 2
  for d in pairs(line_at_depth) do
    if d > depth or (d == depth and event ~= "line") then line_at_depth[d] = nil end
  end
  if event == "line" then line_at_depth[depth] = line end
end

function diag.set_spec(chunkname, text)
  spec_source = chunkname
  line_at_depth = {}
  debug.sethook(line_hook, "lr")
  spec_lines = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do spec_lines[#spec_lines + 1] = line end
end

-- The innermost stack frame that belongs to the spec: {file=, line=} or nil.
function diag.here()
  if not spec_source then return nil end
  local total = stack_depth()
  for level = 2, total do
    local info = debug.getinfo(level, "Slt")
    if not info then break end
    if info.source == spec_source and info.currentline and info.currentline > 0 then
      return { file = spec_source:sub(2), line = info.currentline }
    end
    if info.istailcall then
      -- stack_depth() counts from here, one frame above `level`'s view
      local line = line_at_depth[total - level]
      if line then return { file = spec_source:sub(2), line = line } end
    end
  end
  return nil
end

function diag.source_line(line)
  return spec_lines[line]
end

local function format_one(d)
  local head
  if d.where then
    head = string.format("%s:%d: %s", d.where.file, d.where.line, d.msg)
  else
    head = "loom: " .. d.msg
  end
  local out = { head }
  if d.where and spec_lines[d.where.line] and not d.no_excerpt then
    out[#out + 1] = "    " .. spec_lines[d.where.line]:gsub("^%s+", "")
  end
  for _, note in ipairs(d.notes or {}) do
    if note.where then
      out[#out + 1] = string.format("%s:%d: note: %s", note.where.file, note.where.line, note.msg)
    else
      out[#out + 1] = "note: " .. note.msg
    end
  end
  return table.concat(out, "\n")
end

-- Records an error; `where` may be nil (then the innermost spec frame is used).
function diag.error(where, msg, notes)
  collected[#collected + 1] = { where = where or diag.here(), msg = msg, notes = notes }
end

-- The error object raised at a stage boundary.
local function failure(list)
  table.sort(list, function(a, b)
    local fa, fb = a.where and a.where.file or "", b.where and b.where.file or ""
    if fa ~= fb then return fa < fb end
    local la, lb = a.where and a.where.line or 0, b.where and b.where.line or 0
    if la ~= lb then return la < lb end
    return a.msg < b.msg
  end)
  local texts, seen = {}, {}
  for _, d in ipairs(list) do
    local t = format_one(d)
    if not seen[t] then seen[t] = true; texts[#texts + 1] = t end
  end
  return { diagnostics = list, text = table.concat(texts, "\n") }
end

-- Records an error and stops the stage now (for errors that leave nothing sane
-- to continue with, such as a shape mismatch in the middle of a trace).
function diag.fatal(where, msg, notes)
  diag.error(where, msg, notes)
  diag.check()
end

function diag.has_errors() return #collected > 0 end

-- Stage boundary: raise everything collected so far.
function diag.check()
  if #collected == 0 then return end
  local list = collected
  collected = {}
  error(failure(list), 0)
end

function diag.is_failure(e) return type(e) == "table" and e.diagnostics ~= nil end

function diag.reset() collected = {} end

return diag
