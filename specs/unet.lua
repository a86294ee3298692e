-- specs/unet.lua — a small U-Net (Ronneberger et al. 2015) for semantic segmentation:
-- an encoder of (Conv 3×3 → BatchNorm → ReLU) × 2 blocks with 2×2 max pooling between,
-- a decoder that upsamples with ConvTranspose2d(2, stride 2), concatenates the encoder's
-- features of the same size (the skip connections) and applies a double conv, and a 1×1
-- conv to per-pixel class logits.  The layout and names follow the widely copied
-- PyTorch U-Net (inc, down1..3, up1..3, outc; DoubleConv.double_conv), with base width
-- 16 and three levels.  The data are synthetic 3×64×64 images with a class per pixel;
-- point `data` at your own (Npy { fields = { image = "x.npy", mask = "y.npy" } }).
local N_CLASSES = 3

-- (conv 3×3 → BN → ReLU) × 2, the block at every level
local function DoubleConv(cin, cout)
  return Module "DoubleConv" {
    double_conv = Sequential {
      Conv2d(cin, cout, 3, { padding = 1, bias = false }), BatchNorm2d(cout), ReLU { inplace = true },
      Conv2d(cout, cout, 3, { padding = 1, bias = false }), BatchNorm2d(cout), ReLU { inplace = true },
    },
    forward = function(m, x) return m.double_conv(x) end,
  }
end

-- halve the resolution, then a double conv
local function Down(cin, cout)
  return Module "Down" {
    maxpool_conv = Sequential { MaxPool2d(2), DoubleConv(cin, cout) },
    forward = function(m, x) return m.maxpool_conv(x) end,
  }
end

-- double the resolution, concatenate the skip connection, then a double conv
local function Up(cin, cout)
  return Module "Up" {
    up = ConvTranspose2d(cin, cin // 2, 2, { stride = 2 }),
    conv = DoubleConv(cin, cout),
    forward = function(m, x, skip) return m.conv(cat({ skip, m.up(x) }, 1)) end,
  }
end

model "UNet" {
  inputs = { image = Tensor{3, 64, 64} },
  inc = DoubleConv(3, 16),      -- 16×64×64
  down1 = Down(16, 32),         -- 32×32×32
  down2 = Down(32, 64),         -- 64×16×16
  down3 = Down(64, 128),        -- 128×8×8
  up1 = Up(128, 64),            -- 64×16×16
  up2 = Up(64, 32),             -- 32×32×32
  up3 = Up(32, 16),             -- 16×64×64
  outc = Conv2d(16, N_CLASSES, 1),
  forward = function(m, b)
    local x1 = m.inc(b.image)
    local x2 = m.down1(x1)
    local x3 = m.down2(x2)
    local x4 = m.down3(x3)
    local x = m.up1(x4, x3)
    x = m.up2(x, x2)
    x = m.up3(x, x1)
    return m.outc(x)             -- (B, N_CLASSES, 64, 64) logits
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      image = Tensor{3, 64, 64, dist = "normal"},
      mask = Tensor{64, 64, dtype = "int64", dist = "randint", high = N_CLASSES},
    },
    size = 2048,
  },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(m(b), b.mask) end,   -- per pixel, averaged
  optimizer = Adam { lr = 1e-3, weight_decay = 1e-5 },
  scheduler = CosineAnnealingLR { T_max = 20 * 128 },
  epochs = 20,
}
