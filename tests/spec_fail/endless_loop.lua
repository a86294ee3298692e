-- expect: tests/spec_fail/endless_loop.lua:3: the spec is still running after 1 second (an endless loop?)
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x)
  while true do x = x end
end }
