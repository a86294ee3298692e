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

-- A spec that recurses without end, loops forever or grows without end gets a
-- diagnostic, not a hang: spec code may nest calls MAX_DEPTH deep, run for
-- MAX_SECONDS of CPU and grow the heap by MAX_MIB.  Once a limit is passed the
-- spec is stopped for good: the failure is raised again whenever spec code runs
-- (a spec's own pcall cannot swallow it; see diag.after_pcall), and loom's C host
-- ends the process a second later if the spec is stuck inside a C call (a string
-- pattern that backtracks) where no hook runs.
local MAX_DEPTH = 400
-- from the environment (tests set them lower), when a sensible number
local function setting(name, default, max)
  local v = tonumber(os.getenv(name))
  return (v and v > 0 and v <= max) and v or default
end
local MAX_SECONDS = setting("LOOM_SPEC_SECONDS", 60, 1e6)
local MAX_MIB = setting("LOOM_SPEC_MEMORY", 1024, 1 << 30)
local BACKSTOP_SECONDS = 1
local started_at, events = 0, 0
local stopped = nil          -- the failure that stopped the spec

local function plural(n, what) return string.format("%g %s%s", n, what, n == 1 and "" or "s") end

-- Whether a limit is passed (setting `stopped`).
local function limit_passed()
  if stopped then return true end
  if require("loomc").memory_exceeded() then
    -- the spec file, no line: the allocator cannot say where it was
    diag.error({ file = spec_source:sub(2) }, string.format(
      "the spec uses more than %g MiB of memory (a string or table that grows without end?)", MAX_MIB))
  elseif os.clock() - started_at > MAX_SECONDS then
    diag.error(nil, string.format("the spec is still running after %s (an endless loop?)", plural(MAX_SECONDS, "second")))
  else
    return false
  end
  local ok, failure = pcall(diag.check)
  assert(not ok)
  stopped = failure
  return true
end

-- Raises the stop when the function at `level` (of the caller) is spec code:
-- never inside loom's own code, such as the message handler reporting it.
local function stop_if_spec(level)
  if stopped and debug.getinfo(level + 1, "S").source == spec_source then error(stopped, 0) end
end

-- Entries deeper than a running or returning spec frame are stale: clear them.
local function line_hook(event, line)
  if event == "count" then
    limit_passed()
    stop_if_spec(2)
    return
  end
  events = events + 1
  if events % 4096 == 0 then limit_passed() end
  local info = debug.getinfo(2, "S")
  if info.source ~= spec_source then return end
  stop_if_spec(2)
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
  stopped = nil
  require("loomc").spec_limits(MAX_SECONDS + BACKSTOP_SECONDS, math.floor(MAX_MIB * 1024 * 1024),
    string.format("%s: the spec is still running after %s, stuck inside a library call (a string pattern that backtracks without end?)",
      chunkname:sub(2), plural(MAX_SECONDS + BACKSTOP_SECONDS, "second")))
  debug.sethook(line_hook, "lr", 1000000)
  spec_lines = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do spec_lines[#spec_lines + 1] = line end
end

-- The spec's code has run (or failed): its limits and hook go, so loom's own
-- work afterwards is neither slowed nor cut off.
function diag.end_spec()
  debug.sethook()
  require("loomc").spec_limits()
end

-- What the sandbox's pcall and xpcall return: their results, unless a limit was
-- passed meanwhile (the spec caught the stop, or the allocator's refusal).
function diag.after_pcall(...)
  if limit_passed() then error(stopped, 0) end
  return ...
end

-- Whether the spec has passed a limit (and is being stopped).
function diag.stopped() return limit_passed() end

-- The error to report for `e`, raised by spec code: the stop, when a limit was
-- passed (a memory error reaches no message handler), else `e`.  Ends the spec.
function diag.spec_error(e)
  limit_passed()
  diag.end_spec()
  if stopped then return stopped end
  if e == "not enough memory" then
    diag.error({ file = spec_source:sub(2) }, "the spec ran out of memory")
    local _, failure = pcall(diag.check)
    return failure
  end
  return e
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
  local quoted = key:gsub("%p", "%%%0")
  local patterns = { "%f[%w_]" .. quoted .. "%s*=%f[^=]", '%[%s*"' .. quoted .. '"%s*%]%s*=', "%[%s*'" .. quoted .. "'%s*%]%s*=" }
  -- the key written directly in the block's table (depth 1) wins over the same name in
  -- a nested one (train { optimizer = SGD { lr = 0.1 }, lr = 1 }: the second lr)
  local depth, opened, nested = 0, false, nil
  for n = where.line, math.min(#spec_lines, where.line + 1000) do
    local text = spec_lines[n]:gsub("%-%-.*$", "")
    for _, pattern in ipairs(patterns) do
      local init = 1
      while true do
        local at = text:find(pattern, init)
        if not at then break end
        local d = depth
        for c in text:sub(1, at - 1):gmatch("[{}]") do d = d + (c == "{" and 1 or -1) end
        if d <= 1 then return { file = where.file, line = n } end
        nested = nested or n
        init = at + 1
      end
    end
    for c in text:gmatch("[{}]") do
      if c == "{" then depth, opened = depth + 1, true else depth = depth - 1 end
    end
    if opened and depth <= 0 then break end
  end
  return nested and { file = where.file, line = nested } or where
end

local function format_one(d)
  local head
  if d.where and not d.where.line then
    head = string.format("%s: %s", d.where.file, d.msg)
  elseif d.where then
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
