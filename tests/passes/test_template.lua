-- Unit tests of gen/template.lua's block holes (templates/loop/train.c.in, the one
-- training loop both backends fill, each with its own blocks).  Run by
-- tests/suite_passes.sh: build/lua_unit tests/passes/test_template.lua
-- Prints its plan ("1..N") and one TAP line per test.
local template = require "template"
local unit = dofile((arg[0]:gsub("[^/]*$", "")) .. "lib/unit.lua")
local test, check = unit.test, unit.check

local LOOP = "templates/loop/train.c.in"

-- the loop template's block names, and a value for each of its ${holes}
local function holes()
  local text = template.source(LOOP)
  local blocks, values, n = {}, {}, 0
  for name in text:gmatch("@{([%w_]+)}") do blocks[name] = ""; n = n + 1 end
  for name in text:gmatch("%${([%w_]+)}") do values[name] = "1" end
  return text, blocks, values, n
end

local function fails_with(want, ...)
  local ok, err = pcall(template.fill, ...)
  check(not ok, "filled, want an error with %q", want)
  check(tostring(err):find(want, 1, true), "error %q, want %q", tostring(err), want)
end

test("template_block_hole_without_a_block_is_an_error", function()
  fails_with("no block for @{header}", LOOP, {}, true, nil)
  local _, blocks = holes()
  blocks.micro_batch = nil
  fails_with("no block for @{micro_batch}", LOOP, {}, true, blocks)
end)

test("template_block_that_fills_no_hole_is_an_error", function()
  local _, blocks, values = holes()
  blocks.nowhere = "int x;\n"
  fails_with("block 'nowhere' fills no hole", LOOP, values, false, blocks)
end)

test("template_block_replaces_its_whole_line_and_its_holes_are_filled", function()
  local text, blocks, values, n = holes()
  check(n >= 10, "the loop template has %d block holes", n)
  blocks.header = "// ${model_name} here\n"
  values.model_name = "Net"
  local out = template.fill(LOOP, values, false, blocks)
  check(not out:find("@{", 1, true), "a block hole is left")
  check(out:sub(1, 12) == "// Net here\n", "the header block: %q", out:sub(1, 12))
  local lines = select(2, text:gsub("\n", "")) - n + 1
  check(select(2, out:gsub("\n", "")) == lines, "%d lines, want %d", select(2, out:gsub("\n", "")), lines)
end)

unit.run()
