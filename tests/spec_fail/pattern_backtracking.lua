-- expect: tests/spec_fail/pattern_backtracking.lua: the spec is still running after 2 seconds, stuck inside a library call (a string pattern that backtracks without end?)
-- no Lua hook runs inside string.find: the C host's CPU timer ends it
local found = ("a"):rep(20000):find(("a-"):rep(30) .. "b")
