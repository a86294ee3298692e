-- expect: tests/spec_fail/memory_concat.lua: the spec uses more than 64 MiB of memory (a string or table that grows without end?)
-- string.rep is capped, but concatenation doubles the string just as well
local s = "x"
while true do s = s .. s end
