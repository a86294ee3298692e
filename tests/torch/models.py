"""PyTorch equivalents of every spec in specs/, written by hand as a PyTorch user
would write them (not generated from loom's output): they are the reference that
loom's `inspect` must reproduce — the same print(model), the same parameter and
buffer names, shapes and order.

    /usr/bin/python3 tests/torch/models.py SPEC_NAME

prints print(model), an empty line, then "param NAME [SHAPE]" and
"buffer NAME [SHAPE] DTYPE" lines in named_parameters() / named_buffers() order.
"""
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


# specs/fashion_mlp.lua
class FashionMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, image):
        return self.net(image)


# specs/fashion_cnn.lua
class FashionCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding="same"), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding="same"), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
        )

    def forward(self, image):
        return self.classifier(self.features(image))


# specs/paw.lua
class PawModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.img_input = nn.Sequential(
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 16, 3, padding="same"), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding="same"), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding="same"), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding="same"), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8192, 128),
        )
        self.feat_input = nn.Linear(12, 128)
        self.comb_input = nn.Sequential(nn.BatchNorm1d(256), nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, img, feat):
        return self.comb_input(torch.cat([self.img_input(img), self.feat_input(feat)], dim=1))


# specs/tiny_transformer.lua
V, T, C, H = 256, 64, 64, 4


def causal_attention(q, k, v):
    # torch 1.13 has no F.scaled_dot_product_attention
    L, S = q.size(-2), k.size(-2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf"))
    return F.softmax(att, dim=-1) @ v


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(approximate="tanh"), nn.Linear(4 * C, C))

    def forward(self, x):
        qkv = self.qkv(self.ln_1(x))

        def heads(t):
            return t.reshape(-1, T, H, C // H).transpose(1, 2)

        q = heads(qkv[:, :, 0:C])
        k = heads(qkv[:, :, C:2 * C])
        v = heads(qkv[:, :, 2 * C:3 * C])
        y = causal_attention(q, k, v)
        y = y.transpose(1, 2).reshape(-1, T, C)
        x = x + self.proj(y)
        return x + self.mlp(self.ln_2(x))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.block = Block()
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx):
        h = self.wte(idx) + self.wpe.weight
        h = self.block(self.block(h))
        return self.ln_f(h) @ self.wte.weight.transpose(0, 1)


# specs/tiny_gpt.lua: nanoGPT's shape, scaled down; 4 distinct blocks
class GPTBlock(nn.Module):
    def __init__(self, C, H, T):
        super().__init__()
        self.C, self.H, self.T = C, H, T
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(approximate="tanh"), nn.Linear(4 * C, C))

    def forward(self, x):
        C, H, T = self.C, self.H, self.T
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.reshape(-1, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        y = causal_attention(q, k, v).transpose(1, 2).reshape(-1, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln_2(x))


GPT_V, GPT_T, GPT_C, GPT_H, GPT_L = 256, 128, 256, 4, 4


class TinyGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(GPT_V, GPT_C)
        self.wpe = nn.Embedding(GPT_T, GPT_C)
        self.h = nn.Sequential(*[GPTBlock(GPT_C, GPT_H, GPT_T) for _ in range(GPT_L)])
        self.ln_f = nn.LayerNorm(GPT_C)

    def forward(self, idx):
        h = self.h(self.wte(idx) + self.wpe.weight)
        return self.ln_f(h) @ self.wte.weight.transpose(0, 1)


SPECS = {
    "tiny_gpt": (TinyGPT, [((GPT_T,), torch.int64)]),
    "fashion_mlp": (FashionMLP, [((1, 28, 28), torch.float32)]),
    "fashion_cnn": (FashionCNN, [((1, 28, 28), torch.float32)]),
    "paw": (PawModel, [((3, 128, 128), torch.float32), ((12,), torch.float32)]),
    "tiny_transformer": (TinyTransformer, [((T,), torch.int64)]),
}


def dtype_name(dt):
    return {torch.float32: "float32", torch.int64: "int64"}[dt]


def dump(name):
    cls, inputs = SPECS[name]
    torch.manual_seed(0)
    model = cls()
    # the reference must run: a forward on a batch of 2 checks the model is whole
    args = [torch.randint(0, 8, (2,) + s) if dt == torch.int64 else torch.randn((2,) + s) for s, dt in inputs]
    model.eval()
    with torch.no_grad():
        model(*args)
    print(model)
    print()
    for n, p in model.named_parameters():
        print("param %s [%s]" % (n, ", ".join(str(d) for d in p.shape)))
    for n, b in model.named_buffers():
        print("buffer %s [%s] %s" % (n, ", ".join(str(d) for d in b.shape), dtype_name(b.dtype)))


if __name__ == "__main__":
    dump(sys.argv[1])
