-- specs/char_lstm.lua — a character-level LSTM language model (Karpathy's char-rnn
-- shape) on the King James Bible's bytes: Embedding → 2-layer LSTM → Linear, trained
-- with Adam and clipping by global norm (as char-rnn clips), next-byte cross-entropy.
--
-- The token files (bytes as tokens, vocabulary 256; 90% train, 10% val), which `ninja`
-- writes:
--   bible -f gen1:1-rev22:21 > /tmp/kjv.txt
--   build/loom data tokens /tmp/kjv.txt -o data/kjv.bin --val 0.1
-- The LSTM is unrolled over the context at generation time (PyTorch's gate order and
-- parameter names); each window starts from zero states, as nn.LSTM without (h_0, c_0).
-- The validation loss (cross-entropy per byte) is in nats per byte.
local V, T, E, H = 256, 32, 64, 256   -- vocabulary, context, embedding width, hidden size

model "CharLSTM" {
  inputs = { idx = Tensor{T, dtype = "int64"} },
  embed = Embedding(V, E),
  lstm = LSTM(E, H, { num_layers = 2, batch_first = true }),
  head = Linear(H, V),
  forward = function(m, x)
    local out = m.lstm(m.embed(x.idx))   -- (B, T, H), the top layer's hidden state at every step (and {h_n, c_n}, (2, B, H), unused)
    return m.head(out)                   -- (B, T, V) next-byte logits
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Tokens { train = "data/kjv.bin", val = "data/kjv_val.bin", context = T },
  batch_size = 32,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = Adam { lr = 2e-3 },
  clip = { max_norm = 5.0 },
  max_steps = 2000,
}
