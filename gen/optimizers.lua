-- optimizers: torch.optim's update rules (the single-tensor, non-foreach
-- implementations of PyTorch 1.13, NAdam's of 2.0), one entry each, as C for
-- emit_train.lua's optimizer_step.  An entry says:
--   states(a)       the per-parameter state buffers, by torch's names (a checkpoint
--                   holds them as optimizer.<name>.<param>), laid out like the parameters
--   init(a)         optional: { name = value } for states that do not start at zero
--   desc(a)         torch's constructor call, for the comments
--   decay           how weight_decay enters: "l2" (g += wd * p, torch's default) or
--                   "decoupled" (p *= 1 - lr * wd: AdamW)
--   maximize        whether the optimizer has maximize (the gradient negated first)
--   momentum(a)     optional: the value momentum_at returns when no schedule cycles it
--                   (SGD's momentum, Adam's beta1: OneCycleLR cycles it, as in torch)
--   consts(a, c)    C lines run once per step (per parameter group): c.lr is the
--                   group's learning rate (a double expression), c.f the float suffix
--                   ("f" in float32, "" in float64); `step` is the 0-based count of
--                   updates taken, `mom` the momentum_at value, `o` the Optimizer
--   update(a, c)    C lines per element: `p` (the parameter) and `g` (the gradient,
--                   negated for maximize, L2 decay added) are `real` locals, and so is
--                   each state, by its name; they write p and the states' locals
--   fields(a)       optional: extra Optimizer fields (scalars), with alloc lines
-- The arithmetic follows torch's order of operations, each hyperparameter a double
-- (a Python float) cast to real where it meets a tensor, as PyTorch casts it.
local util = require "util"

local lit = util.c_float

local optimizers = {}

local function R(v, f) return lit(v, f) end   -- a hyperparameter as a real literal

optimizers.RULES = {
  SGD = {
    desc = function(a)
      return string.format("SGD(lr=%s, momentum=%s, dampening=%s, weight_decay=%s, nesterov=%s%s)", lit(a.lr),
        lit(a.momentum), lit(a.dampening), lit(a.weight_decay), tostring(a.nesterov), a.maximize and ", maximize=True" or "")
    end,
    states = function(a) return a.momentum ~= 0 and { "momentum_buffer" } or {} end,
    decay = "l2", maximize = true,
    momentum = function(a) return a.momentum end,
    consts = function(a, c)
      local lines = { string.format("    const real lr_ = (real)%s;", c.lr) }
      if a.momentum ~= 0 then
        lines[#lines + 1] = "    const real momentum = (real)mom;"
        lines[#lines + 1] = "    const int first = step == 0;   // the momentum buffer starts as the first gradient"
      end
      return lines
    end,
    update = function(a, c)
      local lines = {}
      if a.momentum ~= 0 then
        lines[#lines + 1] = string.format("        momentum_buffer = first ? g : momentum * momentum_buffer + %s * g;",
          R(1 - a.dampening, c.f))
        lines[#lines + 1] = a.nesterov and "        g = g + momentum * momentum_buffer;" or "        g = momentum_buffer;"
      end
      lines[#lines + 1] = "        p -= lr_ * g;"
      return lines
    end,
  },

  -- Adam and AdamW (AdamW: decoupled decay); beta1 is `mom` (OneCycleLR may cycle it)
  Adam = {
    desc = function(a, kind)
      return string.format("%s(lr=%s, betas=(%s, %s), eps=%s, weight_decay=%s%s%s)", kind or "Adam", lit(a.lr),
        lit(a.betas[1]), lit(a.betas[2]), lit(a.eps), lit(a.weight_decay), a.amsgrad and ", amsgrad=True" or "",
        a.maximize and ", maximize=True" or "")
    end,
    states = function(a)
      return a.amsgrad and { "exp_avg", "exp_avg_sq", "max_exp_avg_sq" } or { "exp_avg", "exp_avg_sq" }
    end,
    decay = "l2", maximize = true,
    momentum = function(a) return a.betas[1] end,
    consts = function(a, c)
      return {
        "    // bias corrections in double, as torch.optim computes them in Python",
        "    const double beta1 = mom;",
        string.format("    const double bc1 = 1.0 - pow(beta1, (double)(step + 1)), bc2 = 1.0 - pow(%s, (double)(step + 1));",
          lit(a.betas[2])),
        string.format("    const real step_size = (real)(%s / bc1), bc2_sqrt = (real)sqrt(bc2);", c.lr),
        "    const real one_minus_beta1 = (real)(1.0 - beta1);",
      }
    end,
    update = function(a, c)
      local f = c.f
      local lines = {
        "        exp_avg += one_minus_beta1 * (g - exp_avg);   // lerp, as torch",
        string.format("        exp_avg_sq = %s * exp_avg_sq + %s * g * g;", R(a.betas[2], f), R(1 - a.betas[2], f)),
      }
      if a.amsgrad then
        lines[#lines + 1] = "        if (exp_avg_sq > max_exp_avg_sq) max_exp_avg_sq = exp_avg_sq;"
        lines[#lines + 1] = string.format("        real denom = sqrt%s(max_exp_avg_sq) / bc2_sqrt + %s;", f, R(a.eps, f))
      else
        lines[#lines + 1] = string.format("        real denom = sqrt%s(exp_avg_sq) / bc2_sqrt + %s;", f, R(a.eps, f))
      end
      lines[#lines + 1] = "        p -= step_size * exp_avg / denom;"
      return lines
    end,
  },

  -- torch.optim.RMSprop: square_avg = alpha sq + (1 - alpha) g²; centered subtracts the
  -- squared mean gradient; avg = sqrt(...) + eps; momentum: buf = m buf + g / avg, p -= lr buf
  RMSprop = {
    desc = function(a)
      return string.format("RMSprop(lr=%s, alpha=%s, eps=%s, weight_decay=%s, momentum=%s, centered=%s%s)", lit(a.lr),
        lit(a.alpha), lit(a.eps), lit(a.weight_decay), lit(a.momentum), tostring(a.centered),
        a.maximize and ", maximize=True" or "")
    end,
    states = function(a)
      local s = { "square_avg" }
      if a.momentum > 0 then s[#s + 1] = "momentum_buffer" end
      if a.centered then s[#s + 1] = "grad_avg" end
      return s
    end,
    decay = "l2", maximize = true,
    momentum = function(a) return a.momentum end,
    consts = function(a, c)
      local lines = { string.format("    const real lr_ = (real)%s;", c.lr) }
      if a.momentum > 0 then lines[#lines + 1] = "    const real momentum = (real)mom;" end
      return lines
    end,
    update = function(a, c)
      local f = c.f
      local lines = {
        string.format("        square_avg = square_avg * %s + %s * g * g;", R(a.alpha, f), R(1 - a.alpha, f)),
      }
      if a.centered then
        lines[#lines + 1] = string.format("        grad_avg = grad_avg * %s + %s * g;", R(a.alpha, f), R(1 - a.alpha, f))
        lines[#lines + 1] = string.format("        real avg = sqrt%s(square_avg - grad_avg * grad_avg) + %s;", f, R(a.eps, f))
      else
        lines[#lines + 1] = string.format("        real avg = sqrt%s(square_avg) + %s;", f, R(a.eps, f))
      end
      if a.momentum > 0 then
        lines[#lines + 1] = "        momentum_buffer = momentum_buffer * momentum + g / avg;"
        lines[#lines + 1] = "        p -= lr_ * momentum_buffer;"
      else
        lines[#lines + 1] = "        p += -lr_ * (g / avg);"
      end
      return lines
    end,
  },

  -- torch.optim.Adagrad: sum += g²; p -= clr g / (sqrt(sum) + eps), clr = lr / (1 + (t - 1) lr_decay)
  Adagrad = {
    desc = function(a)
      return string.format("Adagrad(lr=%s, lr_decay=%s, weight_decay=%s, initial_accumulator_value=%s, eps=%s%s)",
        lit(a.lr), lit(a.lr_decay), lit(a.weight_decay), lit(a.initial_accumulator_value), lit(a.eps),
        a.maximize and ", maximize=True" or "")
    end,
    states = function() return { "sum" } end,
    init = function(a) return { sum = a.initial_accumulator_value } end,
    decay = "l2", maximize = true,
    consts = function(a, c)
      return { string.format("    const real clr = (real)(%s / (1.0 + (double)step * %s));", c.lr, lit(a.lr_decay)) }
    end,
    update = function(a, c)
      return {
        "        sum += g * g;",
        string.format("        p += -clr * (g / (sqrt%s(sum) + %s));", c.f, R(a.eps, c.f)),
      }
    end,
  },

  -- torch.optim.Adamax: exp_avg = b1 m + (1 - b1) g; exp_inf = max(b2 u, |g| + eps);
  -- p -= lr / (1 - b1^t) · exp_avg / exp_inf
  Adamax = {
    desc = function(a)
      return string.format("Adamax(lr=%s, betas=(%s, %s), eps=%s, weight_decay=%s%s)", lit(a.lr), lit(a.betas[1]),
        lit(a.betas[2]), lit(a.eps), lit(a.weight_decay), a.maximize and ", maximize=True" or "")
    end,
    states = function() return { "exp_avg", "exp_inf" } end,
    decay = "l2", maximize = true,
    momentum = function(a) return a.betas[1] end,
    consts = function(_, c)
      return {
        "    const double beta1 = mom;",
        string.format("    const real clr = (real)(%s / (1.0 - pow(beta1, (double)(step + 1))));", c.lr),
        "    const real b1 = (real)beta1, one_minus_b1 = (real)(1.0 - beta1);",
      }
    end,
    update = function(a, c)
      local f = c.f
      return {
        "        exp_avg = exp_avg * b1 + one_minus_b1 * g;",
        string.format("        real norm = fabs%s(g) + %s;", f, R(a.eps, f)),
        string.format("        exp_inf = exp_inf * %s;", R(a.betas[2], f)),
        "        if (norm > exp_inf || norm != norm) exp_inf = norm;   // amax (NaN propagates)",
        "        p += -clr * (exp_avg / exp_inf);",
      }
    end,
  },

  -- NAdam as PyTorch 2.0 computes it (1.13 multiplies mu into mu_product_next twice;
  -- 2.0 fixed it): mu_t = b1 (1 - 0.5 · 0.96^(t ψ)); mu_product (a float32 scalar in
  -- torch) *= mu_t;  p -= lr (1 - mu_t) / (1 - mu_product) · g / denom
  --                     + lr mu_{t+1} / (1 - mu_product · mu_{t+1}) · exp_avg / denom,
  -- denom = sqrt(exp_avg_sq / (1 - b2^t)) + eps
  NAdam = {
    desc = function(a)
      return string.format("NAdam(lr=%s, betas=(%s, %s), eps=%s, weight_decay=%s, momentum_decay=%s)", lit(a.lr),
        lit(a.betas[1]), lit(a.betas[2]), lit(a.eps), lit(a.weight_decay), lit(a.momentum_decay))
    end,
    states = function() return { "exp_avg", "exp_avg_sq" } end,
    decay = "l2", maximize = false,
    fields = function()
      return { "    float mu_product;      // NAdam's product of mu_1..mu_t (a float32 scalar in torch)",
               "    int64_t mu_product_steps;   // the t it holds (recomputed after a resume)" },
        { "    o->mu_product = 1.0f;", "    o->mu_product_steps = 0;" }
    end,
    consts = function(a, c)
      local mu = string.format("%s * (1.0 - 0.5 * pow(0.96, (double)(%%s) * %s))", lit(a.betas[1]), lit(a.momentum_decay))
      return {
        "    // mu_product of steps 1..step+1: kept across calls, rebuilt from 1 after a resume",
        "    if (o->mu_product_steps > step + 1) { o->mu_product = 1.0f; o->mu_product_steps = 0; }",
        "    while (o->mu_product_steps < step + 1) {",
        "        o->mu_product_steps++;",
        "        o->mu_product = o->mu_product * (float)(" .. string.format(mu, "o->mu_product_steps") .. ");",
        "    }",
        "    const double mu = " .. string.format(mu, "step + 1") .. ";",
        "    const double mu_next = " .. string.format(mu, "step + 2") .. ";",
        "    const float mu_product_next = o->mu_product * (float)mu_next;",
        string.format("    const double bc2 = 1.0 - pow(%s, (double)(step + 1));", lit(a.betas[2])),
        "    const real bc2_ = (real)bc2;",
        string.format("    const real c_grad = (real)(-%s * (1.0 - mu) / (1.0 - (double)o->mu_product));", c.lr),
        string.format("    const real c_avg = (real)(-%s * mu_next / (1.0 - (double)mu_product_next));", c.lr),
      }
    end,
    update = function(a, c)
      local f = c.f
      return {
        string.format("        exp_avg = exp_avg * %s + %s * g;", R(a.betas[1], f), R(1 - a.betas[1], f)),
        string.format("        exp_avg_sq = exp_avg_sq * %s + %s * g * g;", R(a.betas[2], f), R(1 - a.betas[2], f)),
        string.format("        real denom = sqrt%s(exp_avg_sq / bc2_) + %s;", f, R(a.eps, f)),
        "        p += c_grad * (g / denom);",
        "        p += c_avg * (exp_avg / denom);",
      }
    end,
  },

  -- torch.optim.RAdam: Adam's moments; rho_t = rho_inf - 2 t b2^t / (1 - b2^t); while
  -- rho_t <= 5 the step is the bias-corrected momentum alone, after it is rectified
  RAdam = {
    desc = function(a)
      return string.format("RAdam(lr=%s, betas=(%s, %s), eps=%s, weight_decay=%s)", lit(a.lr), lit(a.betas[1]),
        lit(a.betas[2]), lit(a.eps), lit(a.weight_decay))
    end,
    states = function() return { "exp_avg", "exp_avg_sq" } end,
    decay = "l2", maximize = false,
    momentum = function(a) return a.betas[1] end,
    consts = function(a, c)
      return {
        "    // the rectification in double, as torch computes it in Python",
        "    const double t = (double)(step + 1), beta1 = mom;",
        string.format("    const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(%s, t);", lit(a.betas[2])),
        "    const real b1 = (real)beta1, one_minus_b1 = (real)(1.0 - beta1);",
        string.format("    const double rho_inf = 2.0 / (1.0 - %s) - 1.0;", lit(a.betas[2])),
        string.format("    const double rho_t = rho_inf - 2.0 * t * pow(%s, t) / bc2;", lit(a.betas[2])),
        "    const int rectified = rho_t > 5.0;",
        "    const real rect = (real)(rectified ? sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) : 1.0);",
        string.format("    const real bc1_ = (real)bc1, lr_ = (real)%s, bc2_sqrt = (real)sqrt(bc2);", c.lr),
      }
    end,
    update = function(a, c)
      local f = c.f
      return {
        "        exp_avg = exp_avg * b1 + one_minus_b1 * g;",
        string.format("        exp_avg_sq = exp_avg_sq * %s + %s * g * g;", R(a.betas[2], f), R(1 - a.betas[2], f)),
        "        real d = exp_avg / bc1_ * lr_;",
        string.format("        if (rectified) d = d * (bc2_sqrt / (sqrt%s(exp_avg_sq) + %s)) * rect;", f, R(a.eps, f)),
        "        p -= d;",
      }
    end,
  },
}
optimizers.RULES.AdamW = setmetatable({ decay = "decoupled" }, { __index = optimizers.RULES.Adam })

-- The rule of optimizer `kind`.
function optimizers.rule(kind)
  return optimizers.RULES[kind]
end

return optimizers
