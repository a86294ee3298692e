-- expect: tests/spec_fail/layernorm_shape.lua:2: LayerNorm(5) expects the input's last dimensions to be (5), gets input (B, 4, 4)
model "Net" { inputs = { x = Tensor{4, 4} }, ln = LayerNorm(5), forward = function(m, x) return m.ln(x.x) end }
