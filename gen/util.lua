-- util: small helpers shared by the stages (no stage state lives here).
local util = {}

-- Python's repr() of a float (shortest round-trip digits; scientific notation when
-- the exponent is < -4 or >= 16), so printed models match PyTorch's text.
function util.pyfloat(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  if x == 0 then return (1 / x < 0) and "-0.0" or "0.0" end
  local s
  for p = 1, 17 do
    s = string.format("%." .. (p - 1) .. "e", x)
    if tonumber(s) == x then break end
  end
  local sign, digits, exp = s:match("^(%-?)(%d[%.%d]*)e([-+]%d+)$")
  digits = digits:gsub("%.", "")
  exp = tonumber(exp)
  digits = digits:gsub("0+$", "")
  if digits == "" then digits = "0" end
  local n = #digits
  if exp < -4 or exp >= 16 then
    local mant = digits:sub(1, 1)
    if n > 1 then mant = mant .. "." .. digits:sub(2) end
    return string.format("%s%se%s%02d", sign, mant, exp < 0 and "-" or "+", math.abs(exp))
  end
  if exp < 0 then
    return sign .. "0." .. string.rep("0", -exp - 1) .. digits
  end
  if n <= exp + 1 then
    return sign .. digits .. string.rep("0", exp + 1 - n) .. ".0"
  end
  return sign .. digits:sub(1, exp + 1) .. "." .. digits:sub(exp + 2)
end

-- Python's repr() of a value as PyTorch's extra_repr would show it.
function util.pyrepr(v)
  local t = type(v)
  if t == "boolean" then return v and "True" or "False" end
  if v == nil then return "None" end
  if math.type(v) == "integer" then return tostring(v) end
  if t == "number" then return util.pyfloat(v) end
  if t == "string" then return "'" .. v .. "'" end
  if t == "table" then   -- a tuple
    local parts = {}
    for i, x in ipairs(v) do parts[i] = util.pyrepr(x) end
    if #parts == 1 then return "(" .. parts[1] .. ",)" end
    return "(" .. table.concat(parts, ", ") .. ")"
  end
  return tostring(v)
end

-- Edit distance with adjacent transpositions (optimal string alignment: "wieght" is
-- one edit from "weight"); letters differing only in case cost `case_cost` (0 or 1).
local function edit_distance(a, b, case_cost)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    local x = a:sub(i, i)
    for j = 1, #b do
      local y = b:sub(j, j)
      local cost = x == y and 0 or (x:lower() == y:lower() and case_cost or 1)
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and x:lower() == b:sub(j - 1, j - 1):lower() and a:sub(i - 1, i - 1):lower() == y:lower() then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end
util.edit_distance = edit_distance

-- How many edits still make a likely typo of a word this long: one for short words,
-- so that LSTM does not suggest 'sum' nor nn 'l1'.
local function typo_budget(n)
  if n <= 4 then return 1 end
  if n <= 8 then return 2 end
  return 3
end

-- The closest of `candidates` to `word`, if close enough to be a likely typo.
function util.did_you_mean(word, candidates)
  -- case does not count, except to choose between equally close candidates
  local best, best_d, best_exact = nil, math.huge, math.huge
  for _, c in ipairs(candidates) do
    -- lengths 4 apart are 4 edits apart, past any budget: skip them (this runs under the
    -- spec's line hook and CPU limit when the name is met in a traced function)
    if math.abs(#c - #word) <= 3 then
      local d, exact = edit_distance(word, c, 0), edit_distance(word, c, 1)
      if d < best_d or (d == best_d and (exact < best_exact or (exact == best_exact and c < best))) then
        best, best_d, best_exact = c, d, exact
      end
    end
  end
  if best and best_d <= typo_budget(math.max(#word, #best)) then
    return string.format(" (did you mean '%s'?)", best)
  end
  return ""
end

-- A C floating literal for v: the shortest of %.9g / %.17g that reads back as v (only
-- %.9g where `float_only`: nine digits read back any float), with a ".0" where it would
-- read as an integer, then `suffix` ("f" for float); infinity as `infinity` (default
-- math.h's INFINITY; NVRTC has no math.h).
function util.c_float(v, suffix, float_only, infinity)
  if v == math.huge then return infinity or "INFINITY" end
  if v == -math.huge then return "-" .. (infinity or "INFINITY") end
  local s = string.format("%.9g", v)
  if not float_only and tonumber(s) ~= v then s = string.format("%.17g", v) end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s .. (suffix or "")
end

-- A C expression for the product of shape[from..to] (default: all of it), with the
-- batch dim as `b` (default "B"): "12", "B", "B * 12".
function util.count_expr(shape, from, to, b)
  b = b or "B"
  local n, batched = 1, false
  for i = from or 1, to or #shape do
    if shape[i] == "B" then batched = true else n = n * shape[i] end
  end
  if not batched then return tostring(n) end
  if n == 1 then return b end
  return b .. " * " .. n
end

function util.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- "(B, 3, 128, 128)"
function util.shape_str(shape)
  local parts = {}
  for i, d in ipairs(shape) do parts[i] = tostring(d) end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- strides (in elements) of `shape` seen through the broadcast to `out` (0 on a
-- broadcast dim), dims right-aligned: numbers, and C expressions ("B * 8") for the dims
-- outside a batch dim that is not the outermost (the C backend's; CUDA refuses those)
function util.bcast_strides(shape, out)
  local n, k = #out, #shape
  local strides, run, batched = {}, 1, false
  for i = n, 1, -1 do
    local d = shape[k - n + i]
    if d == nil or (d == 1 and out[i] ~= 1) then
      strides[i] = 0
    else
      strides[i] = batched and (run == 1 and "B" or ("B * " .. run)) or run
      if d == "B" then batched = true else run = run * d end
    end
  end
  return strides
end

function util.numel(shape, batch)
  local n = 1
  for _, d in ipairs(shape) do
    if d == "B" then n = n * (batch or 1) else n = n * d end
  end
  return n
end

-- 1234567 -> "1,234,567"
function util.commas(n)
  local s = tostring(math.floor(n))
  local sign, digits = s:match("^(%-?)(%d+)$")
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return sign .. digits:gsub("^,", "")
end

function util.human_bytes(n)
  local units = { "B", "KiB", "MiB", "GiB" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  if i == 1 then return string.format("%d B", n) end
  return string.format("%.2f %s", n, units[i])
end

function util.human_flops(n)
  local units = { "", "K", "M", "G", "T" }
  local i = 1
  while n >= 1000 and i < #units do n = n / 1000; i = i + 1 end
  if i == 1 then return string.format("%d", n) end
  return string.format("%.2f %s", n, units[i])
end

---------------------------------------------------------------------------
-- Text that reaches generated C (and build.ninja).  Every string literal and
-- every piece of spec text in a comment goes through these.

local C_ESCAPES = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- The body of a C string literal holding the bytes of `s` (no quotes): quotes,
-- backslashes and control characters escaped, bytes outside printable ASCII as
-- three-digit octal (never hex, which would swallow a following digit), and every
-- '?' escaped where "??" occurs, so that no trigraph forms (-std=c11 has them).
function util.c_string_body(s)
  s = tostring(s)
  local out = s:gsub('[%c"\\\128-\255]', function(c)
    return C_ESCAPES[c] or string.format("\\%03o", c:byte())
  end)
  if out:find("??", 1, true) then out = out:gsub("%?", "\\?") end
  return out
end

-- `s` as a C string literal: "..." (see util.c_string_body).
function util.c_string(s)
  return '"' .. util.c_string_body(s) .. '"'
end

-- `s` for a // (or build.ninja #) comment: itself when plain printable ASCII,
-- else as a C string literal, which has no line break, no backslash at its end
-- and no trigraph (any of which would pull the next line into the comment).
function util.c_comment(s)
  s = tostring(s)
  if s:find("^[ -~]*$") and not s:find("\\", 1, true) and not s:find("??", 1, true) then return s end
  return util.c_string(s)
end

-- The C identifier the emitters derive from a tensor or field name.
function util.c_ident(name)
  return (name:gsub("[^%w]", "_"))
end

-- Words a data field cannot be called: it becomes a struct member in C and in
-- the CUDA program's C++.
local RESERVED = {}
for w in ([[auto break case char const continue default do double else enum extern float for goto if inline int
  long register restrict return short signed sizeof static struct switch typedef union unsigned void volatile
  while bool true false class new delete this template typename namespace operator private protected public
  virtual friend throw try catch using explicit mutable export constexpr nullptr alignas alignof decltype
  noexcept static_assert thread_local]]):gmatch("%a+") do RESERVED[w] = true end

-- Whether `name` can be used as it is as a C (and C++) member name.
function util.is_c_name(name)
  return type(name) == "string" and name:find("^[%a_][%w_]*$") ~= nil and not RESERVED[name] and not name:find("^_[%u_]")
end

---------------------------------------------------------------------------
-- Lua keeps only the last of two equal keys in a table constructor
-- (`epochs = 1, epochs = 3`), so the duplicates are found in the source text.

local BLOCK_OPEN = { ["function"] = true, ["if"] = true, ["do"] = true, ["repeat"] = true }
local BLOCK_CLOSE = { ["end"] = true, ["until"] = true }

-- The tokens of Lua source `text`: { v = text or string value, kind = "name" |
-- "string" | "number" | "op", line = n }.  A string's value is its text when it
-- has no escapes, else false (never equal to a key).  Returns nil on text it
-- cannot read (the caller has already had it compiled, so only a bug would).
local function lua_tokens(text)
  local toks, i, line, n = {}, 1, 1, #text
  local function long_bracket(at)   -- the level of a [==[ opening at `at`, or nil
    local eq = text:match("^%[(=*)%[", at)
    return eq and #eq
  end
  local function skip_long(at, level)   -- past the ]==] closing a long bracket opened at `at`
    local open_len = level + 2
    local close = "]" .. string.rep("=", level) .. "]"
    local stop = text:find(close, at + open_len, true)
    if not stop then return nil end
    local _, newlines = text:sub(at, stop):gsub("\n", "")
    line = line + newlines
    return stop + #close, text:sub(at + open_len, stop - 1)
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == "\n" then line = line + 1; i = i + 1
    elseif c:find("%s") then i = i + 1
    elseif text:sub(i, i + 1) == "--" then
      local level = long_bracket(i + 2)
      if level then
        i = skip_long(i + 2, level)
        if not i then return nil end
      else
        i = (text:find("\n", i, true) or n + 1)
      end
    elseif c == '"' or c == "'" then
      local j, escaped, start_line = i + 1, false, line
      while true do
        local d = text:sub(j, j)
        if d == "" then return nil end
        if d == "\\" then
          escaped = true
          if text:sub(j + 1, j + 1) == "\n" then line = line + 1 end
          j = j + 2
        elseif d == c then break
        else
          if d == "\n" then return nil end
          j = j + 1
        end
      end
      toks[#toks + 1] = { kind = "string", v = not escaped and text:sub(i + 1, j - 1), line = start_line }
      i = j + 1
    elseif c == "[" and long_bracket(i) then
      local start_line = line
      local after = skip_long(i, long_bracket(i))
      if not after then return nil end
      toks[#toks + 1] = { kind = "string", v = false, line = start_line }
      i = after
    elseif c:find("[%a_]") then
      local word = text:match("^[%a_][%w_]*", i)
      toks[#toks + 1] = { kind = "name", v = word, line = line }
      i = i + #word
    elseif c:find("%d") or (c == "." and text:sub(i + 1, i + 1):find("%d")) then
      local num = text:match("^[%w_%.]*", i)
      while num:find("[eEpP]$") and text:sub(i + #num, i + #num):find("[%+%-]") do
        num = num .. text:match("^[%+%-][%w_%.]*", i + #num)
      end
      toks[#toks + 1] = { kind = "number", v = num, line = line }
      i = i + #num
    else
      local op = text:match("^%.%.%.", i) or text:match("^[=~<>]=", i) or text:match("^::", i)
        or text:match("^%.%.", i) or text:match("^//", i) or text:match("^<<", i) or text:match("^>>", i) or c
      toks[#toks + 1] = { kind = "op", v = op, line = line }
      i = i + #op
    end
  end
  return toks
end

-- Keys given twice in one table constructor of Lua source `text`: a list of
-- { key =, line = (of the second), first = (its first line) }.
function util.duplicate_keys(text)
  local toks = lua_tokens(text)
  if not toks then return {} end
  local found = {}
  local stack = { { kind = "chunk" } }
  local function record(frame, key, line)
    local first = frame.keys[key]
    if first then found[#found + 1] = { key = key, line = line, first = first }
    else frame.keys[key] = line end
  end
  for i, t in ipairs(toks) do
    local top = stack[#stack]
    local at_field = top.kind == "table" and top.field_start
    if top.kind == "table" then top.field_start = false end
    local v, kind = t.v, t.kind
    if kind == "op" and v == "{" then
      stack[#stack + 1] = { kind = "table", keys = {}, field_start = true }
    elseif kind == "op" and (v == "(" or v == "[") then
      local a, b, c = toks[i + 1], toks[i + 2], toks[i + 3]
      if at_field and v == "[" and a and a.kind == "string" and a.v and b and b.v == "]" and c and c.kind == "op" and c.v == "=" then
        record(top, a.v, t.line)
      end
      stack[#stack + 1] = { kind = "group" }
    elseif kind == "op" and (v == "}" or v == ")" or v == "]") then
      if #stack > 1 and top.kind ~= "block" then stack[#stack] = nil end
    elseif kind == "name" and BLOCK_OPEN[v] then
      stack[#stack + 1] = { kind = "block" }
    elseif kind == "name" and BLOCK_CLOSE[v] then
      if top.kind == "block" then stack[#stack] = nil end
    elseif kind == "op" and (v == "," or v == ";") then
      if top.kind == "table" then top.field_start = true end
    elseif kind == "name" and at_field then
      local nxt = toks[i + 1]
      if nxt and nxt.kind == "op" and nxt.v == "=" then record(top, v, t.line) end
    end
  end
  return found
end

return util
