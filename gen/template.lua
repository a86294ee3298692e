-- template: fills ${name} holes in the files under templates/.  A hole with no
-- value and a value that no hole uses are both errors (loom's own bugs), so a
-- template and its filler cannot drift apart silently.
local template = {}

-- The text of a file shipped inside loom (templates/, runtime/); from disk when
-- LOOM_GEN_DIR points at a checkout's gen/ (developing).
function template.source(path)
  local dir = os.getenv("LOOM_GEN_DIR")
  if dir and dir ~= "" then
    local f = io.open(dir .. "/../" .. path, "rb")
    if f then
      local text = f:read("a")
      f:close()
      return text
    end
  end
  local text = require("loomc").embedded(path)
  assert(text, "no embedded file " .. path)
  return text
end

-- Scans C text from `i` to `j` starting in `state` ("code", "string", "char",
-- "line" for a // comment, "block" for /* */) and returns the state at `j`.
local function scan_c(text, i, j, state)
  while i < j do
    local c = text:sub(i, i)
    if state == "code" then
      local two = text:sub(i, i + 1)
      if two == "//" then state = "line"; i = i + 1
      elseif two == "/*" then state = "block"; i = i + 1
      elseif c == '"' then state = "string"
      elseif c == "'" then state = "char" end
    elseif state == "line" then
      if c == "\n" then state = "code" end
    elseif state == "block" then
      if text:sub(i, i + 1) == "*/" then state = "code"; i = i + 1 end
    elseif c == "\\" then i = i + 1   -- an escape in a string or character literal
    elseif (state == "string" and c == '"') or (state == "char" and c == "'") or c == "\n" then state = "code" end
    i = i + 1
  end
  return state
end

-- A template's block holes: a line "@{name}   what goes there" is replaced by
-- blocks[name], a piece of template text (ending its lines, with its own ${holes})
-- that each backend gives (templates/loop/train.c.in, one loop for both backends).
-- A block may hold block holes of its own (a backend's slots, e.g. the strategy's lines
-- in the C program's micro-batch), filled from the same table; an empty block leaves
-- no line.  A block hole with no block and a block that fills no hole are both errors.
local function splice(path, text, blocks)
  local used = {}
  local out, n = text, 1
  while n > 0 do
    local cur = out
    out, n = cur:gsub("()@{([%w_]+)}[^\n]*\n", function(pos, name)
      assert(pos == 1 or cur:sub(pos - 1, pos - 1) == "\n", path .. ": @{" .. name .. "} is not at a line's start")
      local b = blocks and blocks[name]
      assert(b, path .. ": no block for @{" .. name .. "}")
      used[name] = true
      return b
    end)
  end
  for name in pairs(blocks or {}) do
    assert(used[name], path .. ": block '" .. name .. "' fills no hole")
  end
  return out
end

-- Fills the holes of a template (after its block holes, from `blocks`).  A value inside a C string literal is text and
-- is escaped (util.c_string_body); one inside a comment is made safe for it
-- (util.c_comment); anywhere else it is code and goes in as it is.  With
-- `some_unused`, values that fill no hole are allowed.
function template.fill(path, values, some_unused, blocks)
  local util = require "util"
  local text = splice(path, template.source(path), blocks)
  local ninja = path:match("%.ninja%.in$") ~= nil
  local used = {}
  local scanned, state = 1, "code"   -- holes come in order: the scan goes on from the last
  local out = text:gsub("()%${([%w_]+)}", function(pos, name)
    local v = values[name]
    assert(v ~= nil, path .. ": no value for ${" .. name .. "}")
    used[name] = true
    local where
    if ninja then
      local line_start = pos
      while line_start > 1 and text:sub(line_start - 1, line_start - 1) ~= "\n" do line_start = line_start - 1 end
      where = text:sub(line_start, pos - 1):find("^%s*#") and "comment" or "code"
    else
      state, scanned = scan_c(text, scanned, pos, state), pos
      where = (state == "line" or state == "block") and "comment" or state
    end
    if where == "string" then return util.c_string_body(v) end
    if where == "comment" then return util.c_comment(v) end
    return tostring(v)
  end)
  for name in pairs(some_unused and {} or values) do
    assert(used[name], path .. ": value '" .. name .. "' fills no hole")
  end
  return out
end

return template
