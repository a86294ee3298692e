-- lr_lambda: LambdaLR's factor, a Lua expression of the schedule's counter (`epoch`,
-- or `step` with interval = 'step'), compiled to C for lr_at.  An expression rather
-- than a function, so that it becomes C: numbers, the counter, + - * / // % ^,
-- comparisons, and/or/not (Lua's meaning: `epoch < 5 and (epoch + 1) / 5 or 1`),
-- parentheses and math's functions (abs ceil cos exp floor fmod log max min sin sqrt
-- tan, pi, huge).  parse(text, var) → tree or nil, why; to_c(tree, counter_c) → C.
local util = require "util"

local lr_lambda = {}

local MATH = { abs = "fabs", ceil = "ceil", cos = "cos", exp = "exp", floor = "floor", sin = "sin", sqrt = "sqrt",
               tan = "tan", fmod = "fmod", log = "log", max = "fmax", min = "fmin" }
local ARITY = { fmod = 2, max = -1, min = -1, log = -2 }   -- -1: one or more; -2: one or two
local BINARY = {   -- precedence (Lua's), right associativity
  ["or"] = { 1 }, ["and"] = { 2 },
  ["<"] = { 3 }, [">"] = { 3 }, ["<="] = { 3 }, [">="] = { 3 }, ["~="] = { 3 }, ["=="] = { 3 },
  ["+"] = { 5 }, ["-"] = { 5 }, ["*"] = { 6 }, ["/"] = { 6 }, ["//"] = { 6 }, ["%"] = { 6 },
  ["^"] = { 8, true },
}
local UNARY_PREC = 7

local function tokens(text)
  local out, i = {}, 1
  while i <= #text do
    local c = text:sub(i, i)
    if c:match("%s") then
      i = i + 1
    else
      local num = text:match("^0[xX]%x+", i) or text:match("^%d+%.?%d*[eE][%+%-]?%d+", i) or text:match("^%.%d+[eE][%+%-]?%d+", i)
        or text:match("^%d+%.?%d*", i) or text:match("^%.%d+", i)
      if num then
        local v = tonumber(num)
        if not v then return nil, "malformed number '" .. num .. "'" end
        out[#out + 1] = { k = "num", v = v }
        i = i + #num
      elseif c:match("[%a_]") then
        local name = text:match("^[%a_][%w_]*", i)
        out[#out + 1] = { k = (name == "and" or name == "or" or name == "not") and "op" or "name", v = name }
        i = i + #name
      else
        local op = text:match("^//", i) or text:match("^[<>=~]=", i) or text:match("^[%+%-%*/%%%^<>%(%),%.]", i)
        if not op then return nil, "unexpected '" .. c .. "'" end
        out[#out + 1] = { k = "op", v = op }
        i = i + #op
      end
    end
  end
  out[#out + 1] = { k = "end", v = "the end" }
  return out
end

-- The tree of `text`, an expression of the variable `var`; or nil and why.
function lr_lambda.parse(text, var)
  local toks, why = tokens(text)
  if not toks then return nil, why end
  local pos = 1
  local function peek() return toks[pos] end
  local function take() pos = pos + 1; return toks[pos - 1] end
  local function fail(msg) error({ lr_lambda = msg }, 0) end
  local function expect(v)
    local t = take()
    if t.v ~= v then fail(string.format("expected '%s' near '%s'", v, tostring(t.v))) end
  end
  local expr
  local function primary()
    local t = take()
    if t.k == "num" then return { "num", t.v } end
    if t.k == "op" and t.v == "(" then
      local e = expr(0)
      expect(")")
      return e
    end
    if t.k == "name" and t.v == var then return { "var" } end
    if t.k == "name" and t.v == "math" then
      expect(".")
      local f = take()
      if f.v == "pi" then return { "num", math.pi } end
      if f.v == "huge" then return { "num", math.huge } end
      if f.k ~= "name" or not MATH[f.v] then
        fail(string.format("math.%s is not available here (math's abs ceil cos exp floor fmod log max min sin sqrt tan pi huge are)%s",
          tostring(f.v), util.did_you_mean(tostring(f.v), util.sorted_keys(MATH))))
      end
      expect("(")
      local args = { expr(0) }
      while peek().v == "," do take(); args[#args + 1] = expr(0) end
      expect(")")
      local n = ARITY[f.v] or 1
      if (n > 0 and #args ~= n) or (n == -2 and #args > 2) then
        fail(string.format("math.%s takes %s argument%s, got %d", f.v, n == -2 and "one or two" or tostring(n), n == 1 and "" or "s", #args))
      end
      return { "call", f.v, args }
    end
    if t.k == "name" then
      fail(string.format("unknown name '%s'; the expression's variable is '%s'%s", t.v, var,
        (t.v == "epoch" or t.v == "step") and string.format(" (the schedule's interval is the %s)", var) or ""))
    end
    fail(string.format("unexpected '%s'", tostring(t.v)))
  end
  function expr(limit)
    local left
    local t = peek()
    if t.k == "op" and (t.v == "-" or t.v == "not") then
      take()
      left = { "unary", t.v, expr(UNARY_PREC) }
    else
      left = primary()
    end
    while true do
      local op = peek()
      local b = op.k == "op" and BINARY[op.v]
      if not b or b[1] <= limit then break end
      take()
      left = { "bin", op.v, left, expr(b[2] and b[1] - 1 or b[1]) }
    end
    return left
  end
  local ok, tree = pcall(function()
    local e = expr(0)
    if peek().k ~= "end" then fail(string.format("unexpected '%s' after the expression", tostring(peek().v))) end
    return e
  end)
  if not ok then
    if type(tree) == "table" and tree.lr_lambda then return nil, tree.lr_lambda end
    error(tree, 0)
  end
  local typed, terr = pcall(lr_lambda.to_c, tree, var)
  if not typed then
    if type(terr) == "table" and terr.lr_lambda then return nil, terr.lr_lambda end
    error(terr, 0)
  end
  return tree
end

-- C for `tree` (a double), the variable written as `counter` (C).  Lua's and/or over
-- numbers and booleans: a value is { t = "num" | "bool" | "numf" (a number or false),
-- c (num, bool) | cond, val (numf) }.
function lr_lambda.to_c(tree, counter)
  local function fail(msg) error({ lr_lambda = msg }, 0) end
  local function num(v, what)
    if v.t ~= "num" then fail(string.format("%s needs numbers, and this operand can be %s", what, v.t == "bool" and "a boolean" or "false")) end
    return v.c
  end
  local function cond(v)
    if v.t == "num" then return "1" end
    if v.t == "bool" then return v.c end
    return v.cond
  end
  local function walk(n)
    local kind = n[1]
    if kind == "num" then
      return { t = "num", c = n[2] == math.huge and "INFINITY" or util.c_float(n[2], "") }
    elseif kind == "var" then
      return { t = "num", c = "(double)(" .. counter .. ")" }
    elseif kind == "call" then
      local args = {}
      for i, a in ipairs(n[3]) do args[i] = num(walk(a), "math." .. n[2]) end
      local f = MATH[n[2]]
      if n[2] == "log" and #args == 2 then return { t = "num", c = string.format("(log(%s) / log(%s))", args[1], args[2]) } end
      local c = args[1]
      if #args == 1 or (n[2] ~= "max" and n[2] ~= "min") then return { t = "num", c = string.format("%s(%s)", f, table.concat(args, ", ")) } end
      for i = 2, #args do c = string.format("%s(%s, %s)", f, c, args[i]) end
      return { t = "num", c = c }
    elseif kind == "unary" then
      local v = walk(n[3])
      if n[2] == "-" then return { t = "num", c = "(-" .. num(v, "unary -") .. ")" } end
      return { t = "bool", c = "(!" .. cond(v) .. ")" }
    end
    local op, a, b = n[2], walk(n[3]), walk(n[4])
    if op == "and" then
      if a.t == "num" then return b end
      local ca = cond(a)
      if b.t == "bool" then return { t = "bool", c = string.format("(%s && %s)", ca, b.c) } end
      if b.t == "num" then return { t = "numf", cond = ca, val = b.c } end
      return { t = "numf", cond = string.format("(%s && %s)", ca, b.cond), val = b.val }
    elseif op == "or" then
      if a.t == "num" then return a end
      if a.t == "bool" and b.t == "bool" then return { t = "bool", c = string.format("(%s || %s)", a.c, b.c) } end
      if a.t == "bool" then fail("'or' after a comparison gives true when it holds; write 'cond and x or y'") end
      if b.t == "num" then return { t = "num", c = string.format("(%s ? %s : %s)", a.cond, a.val, b.c) } end
      if b.t == "numf" then
        return { t = "numf", cond = string.format("(%s || %s)", a.cond, b.cond), val = string.format("(%s ? %s : %s)", a.cond, a.val, b.val) }
      end
      fail("'x or <comparison>' can give a boolean")
    elseif op == "==" or op == "~=" or op == "<" or op == ">" or op == "<=" or op == ">=" then
      local cop = op == "~=" and "!=" or op
      return { t = "bool", c = string.format("(%s %s %s)", num(a, "'" .. op .. "'"), cop, num(b, "'" .. op .. "'")) }
    end
    local x, y = num(a, "'" .. op .. "'"), num(b, "'" .. op .. "'")
    if op == "^" then return { t = "num", c = string.format("pow(%s, %s)", x, y) } end
    if op == "//" then return { t = "num", c = string.format("floor(%s / %s)", x, y) } end
    if op == "%" then return { t = "num", c = string.format("(%s - floor(%s / %s) * %s)", x, x, y, y) } end
    return { t = "num", c = string.format("(%s %s %s)", x, op, y) }
  end
  local v = walk(tree)
  if v.t == "bool" then fail("the expression gives a boolean, not a number") end
  if v.t == "numf" then fail("the expression gives false when its condition fails; end it with 'or <number>'") end
  return v.c
end

return lr_lambda
