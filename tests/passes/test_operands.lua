-- Unit tests of the shared operand context (gen/operands.lua) and the C kernels' walk
-- on it (gen/kernels_c.lua): sizes kept as values until they are written, storage that
-- views share, the conversions the precision plan lists.  Run by tests/suite_passes.sh:
--   build/lua_unit tests/passes/test_operands.lua
-- Prints its plan ("1..N") and one TAP line per test.
local operands = require "operands"
local util = require "util"
local diag = require "diag"
local pipeline = require "pipeline"
local kernels_c = require "kernels_c"
local unit = dofile((arg[0]:gsub("[^/]*$", "")) .. "lib/unit.lua")
local test, check, eq = unit.test, unit.check, unit.eq


test("size_count_is_a_number_without_the_batch", function()
  eq(operands.count({ 3, 4 }), 12, "count of (3, 4)")
  eq(math.type(operands.count({ "B", 3 }, 2, 2)), "integer", "count of the dims after B")
end)

test("size_count_with_the_batch_writes_and_evaluates", function()
  local n = operands.count({ "B", 3, 4 }, nil, nil, "(long long)B")
  eq(tostring(n), "(long long)B * 12", "written")
  eq(n:at(16), 192, "at a batch of 16")
  eq(tostring(operands.count({ "B" }, nil, nil, "(long long)B")), "(long long)B", "B alone")
  eq("n = " .. n, "n = (long long)B * 12", "concatenated")
end)

test("size_products_write_as_the_cuda_program_writes_them", function()
  local rows = operands.count({ "B", 4, 8 }, 1, 2, "(long long)B")
  local t = operands.times(rows, 64)
  eq(tostring(t), "(long long)((long long)B * 4) * 64", "times")
  eq(t:at(2), 512, "times at 2")
  eq(tostring(rows * 8), "(long long)((long long)B * 4) * 8", "a Size * a number")
  local np = operands.by(operands.count({ "B" }), 196)
  eq(tostring(operands.scaled(27, np)), "(long long)27 * (long long)B * 196", "scaled")
  eq(operands.scaled(27, np):at(3), 27 * 3 * 196, "scaled at 3")
  eq(tostring(operands.times(1, 5)), "(long long)(1) * 5", "times of a number")
  eq(tostring(operands.batches({ "B", 4 })), "((long long)B * 4)", "batch dims with B")
  eq(tostring(operands.batches({ 2, 3 })), "6", "batch dims without B")
  eq(operands.batches({ "B", 4 }):at(5), 20, "batch dims at 5")
end)

test("size_refuses_a_c_string", function()
  check(not pcall(operands.times, "B * 12", 2), "times took a C string")
  check(not operands.is_size("12"), "a string counted as a size")
  check(operands.is_size(12) and operands.is_size(operands.count({ "B" })), "a number or a Size is a size")
end)

test("float_literals_of_c_and_of_cuda", function()
  eq(util.c_float(1 / 3, "f"), "0.33333333333333331f", "C: the double's digits")
  eq(util.c_float(1 / 3, "f", true), "0.333333333f", "float only: nine digits")
  eq(util.c_float(2, "f", true), "2.0f", "an integer value")
  eq(util.c_float(math.huge, "", false), "INFINITY", "C infinity")
  eq(util.c_float(-math.huge, "f", true, "__int_as_float(0x7f800000)"), "-__int_as_float(0x7f800000)", "CUDA -infinity")
end)

-- fashion_cnn lowered for the CPU at bf16-mixed (casts, views, BatchNorm buffers)
local function lowered(precision)
  diag.reset()
  local g = pipeline.front_end("specs/fashion_cnn.lua")
  return pipeline.lower(g, { backend = "cpu", precision = precision })
end

test("context_views_share_their_sources_place", function()
  local l = lowered("bf16-mixed")
  local e = operands.context(l, { batch = "B", literal = tostring })
  local views = 0
  for _, node in ipairs(l.trace.nodes) do
    local a = l.plan.acts[node.out]
    if a.source then
      views = views + 1
      local pv, ps = e.place(node.out), e.place(a.source)
      eq(pv.arena .. "@" .. tostring(pv.offset), ps.arena .. "@" .. tostring(ps.offset), "a view's place")
      check(pv.root == l.root(node.out), "the place's root is the plan's")
    end
  end
  check(views > 0, "fashion_cnn has no view")
end)

test("context_sizes_mark_the_batch", function()
  local l = lowered("32-true")
  local e = operands.context(l, { batch = "B", literal = tostring })
  local x = l.trace.nodes[1].inputs[1]
  check(not e.uses_B, "uses_B before any size")
  eq(e.numel(x), "B * 784", "numel of the image")
  check(e.uses_B, "uses_B after a batched size")
  eq(e.count_max(x.shape), l.batch_max * 784, "count at the largest batch")
end)

test("walk_records_the_conversions_the_plan_lists", function()
  local l = lowered("bf16-mixed")
  local w = kernels_c.walk(l)
  local compute = l.settings.compute
  -- (a "native" operand: a kernel over its bf16 storage reads or writes it, no conversion)
  local converted, native = 0, 0
  for _, list in ipairs(w.operands) do
    for _, rec in ipairs(list) do
      if rec.native then
        native = native + 1
        eq(rec.storage .. "/" .. rec.view, "bf16/bf16", "a native operand's formats")
      elseif not (rec.storage == compute and rec.view == compute) then converted = converted + 1 end
    end
  end
  check(converted > 0, "bf16-mixed converts no operand")
  check(native > 0, "no kernel reads its bf16 storage itself (fashion_cnn's chains and conv2d(32, 64) do)")
  local rows, native_rows = 0, 0
  for line in kernels_c.precision_plan(l, w):gmatch("[^\n]+") do
    if line:match("^conversion\t") then rows = rows + 1 end
    if line:match("^native\t") then native_rows = native_rows + 1 end
  end
  eq(rows, converted, "conversion rows of precision_plan.tsv")
  eq(native_rows, native, "native rows of precision_plan.tsv")
  check(w.num_wide >= 16, "m->wide holds no converted operand")
  -- at 32-true nothing is converted
  local w32 = kernels_c.walk(lowered("32-true"))
  for _, list in ipairs(w32.operands) do
    for _, rec in ipairs(list) do eq(rec.storage .. "/" .. rec.view, "f32/f32", "a 32-true operand") end
  end
end)

unit.run()
