-- expect: tests/spec_fail/memory_pcall.lua: the spec uses more than 64 MiB of memory (a string or table that grows without end?)
-- pcall catches the allocator's refusal, but not the stop that follows it
local keep = {}
while true do
  pcall(function() local s = "x"; while true do s = s .. s; keep[#keep + 1] = s end end)
end
