-- expect: tests/spec_fail/nn_functional_not_yet.lua:4: nn.functional.leaky_relu: leaky_relu is not supported yet; supported functions: add, autoregress, bce, bce_with_logits, binary_cross_entropy, binary_cross_entropy_with_logits, cat, chunk, concat, cross_entropy, div, flatten, gelu, l1, l1_loss, log_softmax, matmul, mean, mse, mse_loss, mul, narrow, permute, relu, reshape, scaled_dot_product_attention, sigmoid, silu, slice, softmax, split, squeeze, sub, sum, tanh, transpose, unsqueeze, view
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return nn.functional.leaky_relu(x) end,
}
