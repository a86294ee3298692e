-- expect: tests/spec_fail/error_without_message.lua:2: error raised with no message
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) error(nil) end }
