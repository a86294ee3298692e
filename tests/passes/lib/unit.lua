-- The harness tests/passes/*.lua share (loaded with dofile; suite_passes.sh runs only the
-- files directly in tests/passes/ and counts their `test("` lines as the plan):
-- test(name, fn) registers a case, check/eq fail it one level up, run() prints the plan
-- and one TAP line per case (a failure's traceback as comments) and exits.
local unit = {}
local tests = {}

function unit.test(name, fn) tests[#tests + 1] = { name = name, fn = fn } end

function unit.check(cond, fmt, ...)
  if not cond then error(string.format(fmt, ...), 2) end
end

function unit.eq(got, want, what)
  if got ~= want then error(string.format("%s: got %s, want %s", what, tostring(got), tostring(want)), 2) end
end

function unit.run()
  print("1.." .. #tests)
  local failed = 0
  for _, t in ipairs(tests) do
    local ok, err = xpcall(t.fn, debug.traceback)
    if ok then print("ok " .. t.name)
    else
      failed = failed + 1
      local first, rest = tostring(err):match("^([^\n]*)\n?(.*)$")
      print("not ok " .. t.name .. ": " .. first)
      for line in rest:gmatch("[^\n]+") do print("# " .. line) end
    end
  end
  os.exit(failed == 0 and 0 or 1)
end

return unit
