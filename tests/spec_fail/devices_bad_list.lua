-- expect: tests/spec_fail/devices_bad_list.lua:3: fabric.devices must be a list of device indices, got {0, 'a'}
model "Net" { inputs = { x = Tensor{4}, y = Tensor{2} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
fabric { devices = { 0, "a" } }
