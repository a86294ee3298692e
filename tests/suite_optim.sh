#!/usr/bin/env bash
# The optimizers of gen/optimizers.lua beyond SGD/Adam/AdamW, and parameter groups,
# against torch.optim: tests/suite_parity.sh's parity (20 steps of fashion_mlp on one
# batch, fp32 and fp64, the same measure and tolerances) with these optimizer lines.
# NAdam is compared with PyTorch 2.0's rule (tests/torch/parity.py's NAdam2: 1.13
# multiplies mu into mu_product_next twice; loom follows 2.0).
cd "$(dirname "$0")/.."
export PARITY_SPECS=fashion_mlp
export PARITY_CASES='rmsprop_centered_momentum|RMSprop { lr = 1e-3, alpha = 0.9, momentum = 0.8, centered = true, weight_decay = 1e-3 }||fashion_mlp
rmsprop_maximize|RMSprop { lr = 1e-3, maximize = true }||fashion_mlp
adagrad|Adagrad { lr = 0.05, lr_decay = 0.01, initial_accumulator_value = 0.1, weight_decay = 1e-3 }||fashion_mlp
adamax|Adamax { lr = 2e-3, betas = {0.8, 0.99}, weight_decay = 1e-3 }||fashion_mlp
nadam|NAdam { lr = 2e-3, weight_decay = 1e-3 }||fashion_mlp
radam|RAdam { lr = 1e-2, weight_decay = 1e-3 }||fashion_mlp
adamw_groups|AdamW { lr = 1e-3, weight_decay = 0.05, groups = { { params = "%.bias$", weight_decay = 0 }, { params = "^net%.1%.", lr = 3e-4 } } }|{ max_norm = 1.0 }|fashion_mlp
sgd_groups|SGD { lr = 0.05, momentum = 0.9, groups = { { params = "weight$", lr = 0.02, weight_decay = 1e-3 } } }||fashion_mlp'
exec bash tests/suite_parity.sh
