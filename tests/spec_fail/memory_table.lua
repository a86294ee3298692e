-- expect: tests/spec_fail/memory_table.lua: the spec uses more than 64 MiB of memory (a string or table that grows without end?)
local t = {}
local i = 0
while true do i = i + 1; t[i] = ("x"):rep(100000) .. i end
