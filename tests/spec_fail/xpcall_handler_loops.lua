-- expect: tests/spec_fail/xpcall_handler_loops.lua:3: the spec is still running after 1 second (an endless loop?)
-- the handler that would swallow the stop loops too
while true do xpcall(function() while true do end end, function() while true do end end) end
