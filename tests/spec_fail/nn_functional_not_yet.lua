-- expect: tests/spec_fail/nn_functional_not_yet.lua:4: nn.functional.glu: nn.functional has no function 'glu' (did you mean 'elu'?); supported functions: abs, accuracy, add, amax, argmax, autoregress, bce, bce_with_logits, binary_cross_entropy, binary_cross_entropy_with_logits, cat, chunk, clamp, clip, concat, cosine_similarity, cross_entropy, div, elu, eq, exp, flatten, ge, gelu, gt, hardswish, hardtanh, huber, huber_loss, kl_div, l1, l1_loss, le, leaky_relu, log, log_softmax, lt, masked_fill, matmul, max, maximum, mean, minimum, mish, mse, mse_loss, mul, narrow, ne, nll_loss, permute, pow, relu, relu6, reshape, rsqrt, scaled_dot_product_attention, sigmoid, silu, slice, smooth_l1, smooth_l1_loss, softmax, softplus, split, sqrt, squeeze, std, sub, sum, tanh, transpose, unsqueeze, var, view, where
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return nn.functional.glu(x) end,
}
