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

-- A spec that recurses without end or loops forever gets a diagnostic, not a
-- hang: spec code may nest calls MAX_DEPTH deep and run for MAX_SECONDS (CPU).
local MAX_DEPTH = 400
local MAX_SECONDS = tonumber(os.getenv("LOOM_SPEC_SECONDS")) or 60   -- tests set it lower
local started_at, events = 0, 0

local function check_time()
  if os.clock() - started_at > MAX_SECONDS then
    started_at = math.huge   -- report once
    diag.fatal(nil, string.format("the spec is still running after %g second%s (an endless loop?)",
      MAX_SECONDS, MAX_SECONDS == 1 and "" or "s"))
  end
end

-- Entries deeper than a running or returning spec frame are stale: clear them.
local function line_hook(event, line)
  if event == "count" then return check_time() end
  events = events + 1
  if events % 4096 == 0 then check_time() end
  local info = debug.getinfo(2, "S")
  if info.source ~= spec_source then return end
  local depth = stack_depth() - 2
  for d in pairs(line_at_depth) do
    if d > depth or (d == depth and event ~= "line") then line_at_depth[d] = nil end
  end
  if event == "line" then
    line_at_depth[depth] = line
    if depth > MAX_DEPTH then
      line_at_depth = {}
      diag.fatal(nil, string.format("calls nest more than %d deep here: does a function or method call itself without end?", MAX_DEPTH))
    end
  end
end

function diag.set_spec(chunkname, text)
  spec_source = chunkname
  line_at_depth = {}
  started_at = os.clock()
  debug.sethook(line_hook, "lr", 1000000)
  spec_lines = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do spec_lines[#spec_lines + 1] = line end
end

-- The innermost stack frame that belongs to the spec: {file=, line=} or nil.
-- With `outer` (a function), the search stops at the next frame that runs it and
-- returns false: that frame already found the answer (a module applied inside
-- another module's forward is called from where the outer one was), and a deep
-- stack is not walked once per level.
function diag.here(outer)
  if not spec_source then return nil end
  local total   -- the stack's depth, counted only when a tail call needs it
  for level = 2, math.huge do
    local info = debug.getinfo(level, outer and "Sltf" or "Slt")
    if not info then break end
    if info.source == spec_source and info.currentline and info.currentline > 0 then
      return { file = spec_source:sub(2), line = info.currentline }
    end
    if outer and level > 2 and info.func == outer then return false end
    if info.istailcall then
      -- stack_depth() counts from here, one frame above `level`'s view
      total = total or stack_depth()
      local line = line_at_depth[total - level]
      if line then return { file = spec_source:sub(2), line = line } end
    end
  end
  return nil
end

function diag.source_line(line)
  return spec_lines[line]
end

-- Lua keeps no line for a table's fields, so a setting's line is found in the
-- text: the first line, from `where` to the end of the table constructor that
-- starts there, that reads `key =`.  Falls back to `where`.
function diag.key_where(where, key)
  if not where or type(key) ~= "string" or not spec_source or where.file ~= spec_source:sub(2) then return where end
  local pattern = "%f[%w_]" .. key:gsub("%p", "%%%0") .. "%s*=%f[^=]"
  local depth, opened = 0, false
  for n = where.line, math.min(#spec_lines, where.line + 1000) do
    local text = spec_lines[n]:gsub("%-%-.*$", "")
    if text:find(pattern) then return { file = where.file, line = n } end
    for c in text:gmatch("[{}]") do
      if c == "{" then depth, opened = depth + 1, true else depth = depth - 1 end
    end
    if opened and depth <= 0 then break end
  end
  return where
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
-- `opts.no_excerpt` leaves out the source line (when it would show nothing useful).
function diag.error(where, msg, notes, opts)
  collected[#collected + 1] = { where = where or diag.here(), msg = msg, notes = notes,
                                no_excerpt = opts and opts.no_excerpt }
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
