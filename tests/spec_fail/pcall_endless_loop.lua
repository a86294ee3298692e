-- expect: tests/spec_fail/pcall_endless_loop.lua:3: the spec is still running after 1 second (an endless loop?)
-- a spec's own pcall catches the stop once, but the stop is raised again
while true do pcall(function() while true do end end) end
