-- expect: tests/spec_fail/attention_options_not_table.lua:2: scaled_dot_product_attention: options must be a table, e.g. {is_causal = true}
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return scaled_dot_product_attention(x.x, x.x, x.x, 3) end }
