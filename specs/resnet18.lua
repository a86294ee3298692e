-- specs/resnet18.lua — ResNet-18 as trained on CIFAR-10 (He et al. 2016, the CIFAR
-- variant): a 3×3 stem without max pooling, four stages of two BasicBlocks
-- (64, 128, 256, 512 channels; stride 2 and a 1×1 projection where a stage begins),
-- global average pooling and a linear classifier.  The names are torchvision's
-- (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc), so its weights load by name.
-- The data are synthetic 3×32×32 images in 10 classes; point `data` at your own
-- (Npy { fields = { image = "x.npy", label = "y.npy" } }) to train on CIFAR-10.

-- conv3x3 → BN → ReLU → conv3x3 → BN, plus the input (projected when the shape changes)
local function BasicBlock(inplanes, planes, stride)
  local project = stride ~= 1 or inplanes ~= planes
  return Module "BasicBlock" {
    conv1 = Conv2d(inplanes, planes, 3, { stride = stride, padding = 1, bias = false }),
    bn1 = BatchNorm2d(planes),
    relu = ReLU { inplace = true },
    conv2 = Conv2d(planes, planes, 3, { stride = 1, padding = 1, bias = false }),
    bn2 = BatchNorm2d(planes),
    downsample = project and Sequential {
      Conv2d(inplanes, planes, 1, { stride = stride, bias = false }), BatchNorm2d(planes),
    } or nil,
    forward = function(m, x)
      local out = m.relu(m.bn1(m.conv1(x)))
      out = m.bn2(m.conv2(out))
      local identity = project and m.downsample(x) or x
      return m.relu(out + identity)
    end,
  }
end

local function stage(inplanes, planes, stride)
  return Sequential { BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1) }
end

model "ResNet" {
  inputs = { image = Tensor{3, 32, 32} },
  conv1 = Conv2d(3, 64, 3, { stride = 1, padding = 1, bias = false }),
  bn1 = BatchNorm2d(64),
  relu = ReLU { inplace = true },
  layer1 = stage(64, 64, 1),      -- 64×32×32
  layer2 = stage(64, 128, 2),     -- 128×16×16
  layer3 = stage(128, 256, 2),    -- 256×8×8
  layer4 = stage(256, 512, 2),    -- 512×4×4
  avgpool = AdaptiveAvgPool2d({ 1, 1 }),
  fc = Linear(512, 10),
  forward = function(m, x)
    local h = m.relu(m.bn1(m.conv1(x.image)))
    h = m.layer4(m.layer3(m.layer2(m.layer1(h))))
    return m.fc(flatten(m.avgpool(h), 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      image = Tensor{3, 32, 32, dist = "normal"},
      label = Tensor{dtype = "int64", dist = "randint", high = 10},
    },
    size = 50000,
  },
  batch_size = 128,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 5e-4 },
  scheduler = CosineAnnealingLR { T_max = 30 * 390 },
  epochs = 30,
}
