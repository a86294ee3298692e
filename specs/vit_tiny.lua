-- specs/vit_tiny.lua — a Vision Transformer (Dosovitskiy et al. 2021) of ViT-Tiny's width
-- (192 channels, 3 heads, MLP 768, 12 pre-norm blocks) on Fashion-MNIST: the image cut
-- into 4×4 patches by a strided Conv2d (7×7 = 49 tokens), a learned class token in front,
-- learned position embeddings, TransformerEncoderLayer blocks (MultiheadAttention and a
-- GELU MLP, each with LayerNorm first and a residual), a final LayerNorm and a linear
-- head on the class token.  Dropout is off, as timm's ViT-Tiny trains by default.
-- The class token and the position table are Embedding weights (loom has no bare
-- nn.Parameter yet), initialised as timm does (truncated normal, std 0.02).
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
  cls_token = Embedding(1, C),
  pos_embed = Embedding(TOKENS, C),
  blocks = Sequential(blocks),
  norm = LayerNorm(C, { eps = 1e-6 }),
  head = Linear(C, 10),
  forward = function(m, b)
    local x = transpose(flatten(m.patch_embed(b.image), 2), 1, 2)   -- (B, 49, C)
    -- the class token for every sample (PyTorch: self.cls_token.expand(B, -1, -1)):
    -- (B, 1, C) zeros from x, plus the (1, C) token, broadcast
    local cls = slice(x, 1, 0, 1) * 0 + m.cls_token.weight
    x = cat({ cls, x }, 1) + m.pos_embed.weight                     -- (B, 50, C)
    x = m.norm(m.blocks(x))
    return m.head(reshape(slice(x, 1, 0, 1), -1, C))                -- the class token's logits
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = FashionMNIST { val_split = 5000 },
  batch_size = 128,
  -- timm's initialisation: truncated normal (std 0.02) for the tokens and the Linear layers
  init = function(name, p)
    if name == "cls_token.weight" or name == "pos_embed.weight" or (name:match("linear%d%.weight$")) or name == "head.weight" then
      trunc_normal_(p, 0, 0.02)   -- timm: a = -2, b = 2 (absolute), so barely truncated
    end
  end,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = AdamW { lr = 1e-3, weight_decay = 0.05 },
  scheduler = WarmupCosine { warmup_steps = 500 },
  epochs = 30,
}
