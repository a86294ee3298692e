-- specs/vit_tiny.lua — a Vision Transformer (Dosovitskiy et al. 2021) of ViT-Tiny's width
-- (192 channels, 3 heads, MLP 768, 12 pre-norm blocks) on Fashion-MNIST: the image cut
-- into 4×4 patches by a strided Conv2d (7×7 = 49 tokens), a learned class token in front,
-- learned position embeddings, TransformerEncoderLayer blocks (MultiheadAttention and a
-- GELU MLP, each with LayerNorm first and a residual), a final LayerNorm and a linear
-- head on the class token.  Dropout is off, as timm's ViT-Tiny trains by default.
-- The class token and the position table are the model's own parameters, as torchvision's
-- VisionTransformer has them (nn.Parameter: class_token zeros, pos_embedding N(0, 0.02)),
-- the class token expanded over the batch.
local C, HEADS, DEPTH, MLP, PATCH = 192, 3, 12, 768, 4
local TOKENS = (28 // PATCH) * (28 // PATCH) + 1   -- 49 patches + the class token

local blocks = {}
for i = 1, DEPTH do
  blocks[i] = TransformerEncoderLayer(C, HEADS, { dim_feedforward = MLP, dropout = 0.0, activation = "gelu",
                                                  layer_norm_eps = 1e-6, batch_first = true, norm_first = true })
end

model "ViT" {
  inputs = { image = Tensor{1, 28, 28} },
  patch_embed = Conv2d(1, C, PATCH, { stride = PATCH }),   -- (B, C, 7, 7)
  class_token = Parameter(1, 1, C),            -- nn.Parameter(torch.zeros(1, 1, C))
  pos_embedding = Parameter(1, TOKENS, C),     -- nn.Parameter(torch.empty(1, TOKENS, C).normal_(std=0.02))
  blocks = Sequential(blocks),
  norm = LayerNorm(C, { eps = 1e-6 }),
  head = Linear(C, 10),
  forward = function(m, b)
    local x = transpose(flatten(m.patch_embed(b.image), 2), 1, 2)   -- (B, 49, C)
    local cls = expand(m.class_token, b.image:size(0), -1, -1)       -- (B, 1, C)
    x = cat({ cls, x }, 1) + m.pos_embedding                        -- (B, 50, C)
    x = m.norm(m.blocks(x))
    return m.head(reshape(slice(x, 1, 0, 1), -1, C))                -- the class token's logits
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = FashionMNIST { val_split = 5000 },
  batch_size = 128,
  -- torchvision's position table N(0, 0.02) (its class token stays zeros); timm's truncated
  -- normal (std 0.02) for the Linear layers
  init = function(name, p)
    if name == "pos_embedding" then normal_(p, 0, 0.02)
    elseif name:match("linear%d%.weight$") or name == "head.weight" then
      trunc_normal_(p, 0, 0.02)   -- timm: a = -2, b = 2 (absolute), so barely truncated
    end
  end,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = AdamW { lr = 1e-3, weight_decay = 0.05 },
  scheduler = WarmupCosine { warmup_steps = 500 },
  epochs = 30,
}
