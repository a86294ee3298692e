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

-- Levenshtein distance; letters differing only in case cost `case_cost` (0 or 1).
local function edit_distance(a, b, case_cost)
  local prev, cur = {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    cur[0] = i
    for j = 1, #b do
      local x, y = a:sub(i, i), b:sub(j, j)
      local cost = x == y and 0 or (x:lower() == y:lower() and case_cost or 1)
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[#b]
end

-- The closest of `candidates` to `word`, if close enough to be a likely typo.
function util.did_you_mean(word, candidates)
  -- case does not count, except to choose between equally close candidates
  local best, best_d, best_exact = nil, math.huge, math.huge
  for _, c in ipairs(candidates) do
    local d, exact = edit_distance(word, c, 0), edit_distance(word, c, 1)
    if d < best_d or (d == best_d and (exact < best_exact or (exact == best_exact and c < best))) then
      best, best_d, best_exact = c, d, exact
    end
  end
  if best and best_d <= math.max(2, #word // 3) then
    return string.format(" (did you mean '%s'?)", best)
  end
  return ""
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
-- broadcast dim), dims right-aligned; "B" is always the outermost dim
function util.bcast_strides(shape, out)
  local n, k = #out, #shape
  local strides, run = {}, 1
  for i = n, 1, -1 do
    local d = shape[k - n + i]
    if d == nil or (d == 1 and out[i] ~= 1) then
      strides[i] = 0
    else
      strides[i] = run
      run = run * (d == "B" and 1 or d)
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

return util
