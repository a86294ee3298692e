-- expect: tests/spec_fail/fabric_unknown_no_match.lua:14: fabric: unknown setting 'compile'; valid settings: accelerator, auto_wrap_policy, bucket_cap_mb, cpu_offload, ddp_timeout, detect_anomaly, devices, float32_matmul_precision, num_nodes, precision, sharding_strategy, strategy, sync_batchnorm
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
fabric { compile = true }
