-- emit_train: the C backend's training program (train.c).  Everything the spec
-- decided — data source, optimizer and its constants, schedule, clipping,
-- callbacks, loggers — becomes plain code in the loop; nothing is looked up at
-- run time.
local diag = require "diag"
local util = require "util"
local optimizers = require "optimizers"
local lr_lambda = require "lr_lambda"

local emit_train = {}

local lit = util.c_float

-- the lines of a list, in order; a nil entry (a line that a setting leaves out) is skipped
local function join(lines)
  local n, t = 0, {}
  for k in pairs(lines) do if math.type(k) == "integer" and k > n then n = k end end
  for i = 1, n do if lines[i] ~= nil then t[#t + 1] = lines[i] end end
  return table.concat(t, "\n")
end


local cname = util.c_ident

-- Parameters, gradients, buffers and optimizer state are state_t (model.h).  When
-- that is the compute type (32-true, 64-true, the mixed precisions) the loops below
-- read and write it directly; in 16 bits (bf16-true, 16-true) every value is widened
-- to float where it is read (LD) and rounded to nearest even once where it is
-- stored (ST), with kernels_cast.inc's conversions.  STATE16 is then the format.
--
-- The optimizer state (momentum, moments) is stored like the parameters (PyTorch
-- makes it zeros_like(param)), in OPT16, except where precision.optimizer_format says
-- otherwise: 16-true keeps it float32 (OPT16 nil; float16 cannot hold Adam's second
-- moment, see gen/precision.lua), parameters and gradients float16.
--
-- These are one program's: `storage(l)` makes them for the lowered table `l`, and the
-- code builders below take them as their first argument.
local function storage(l)
  local ps = l.settings
  local opt_format = require("precision").optimizer_format(ps)
  local k = {
    STATE16 = ps.state ~= ps.compute and ps.state or nil,
    OPT16 = opt_format ~= ps.compute and opt_format or nil,   -- 16-true: float32 (see above)
    -- the pragma for a loop over every parameter: threads only pay off on big buffers,
    -- and even a false `if` clause costs libgomp about 1 µs, so decide it here
    parallel = l.state.nparams > 32768,
  }
  assert(not k.STATE16 or ps.compute == "f32", "16-bit state is computed in float")
  k.PAR_FOR = k.parallel and "    #pragma omp parallel for schedule(static)"
    or "    // (serial: too few parameters for threads to pay off)"
  function k.LD(x) return k.STATE16 and string.format("k_widen_%s(%s)", k.STATE16, x) or x end
  function k.ST(x) return k.STATE16 and string.format("k_narrow_%s(%s)", k.STATE16, x) or x end
  function k.LDO(x) return k.OPT16 and string.format("k_widen_%s(%s)", k.OPT16, x) or x end
  function k.STO(x) return k.OPT16 and string.format("k_narrow_%s(%s)", k.OPT16, x) or x end
  return k
end
local CKPT_DTYPE = { f32 = "CKPT_F32", f64 = "CKPT_F64", bf16 = "CKPT_BF16", f16 = "CKPT_F16" }

---------------------------------------------------------------------------
-- data

local DIST = { uniform = "SYNTH_UNIFORM", normal = "SYNTH_NORMAL", bernoulli = "SYNTH_BERNOULLI", randint = "SYNTH_RANDINT" }

local index_ranges = require("graph").index_ranges
local csv_open_lines, image_open_lines

-- A path of the spec's as the program opens it: `var` = the spec's path, or with
-- --data DIR the file of that name in DIR (as Npy and Tokens do).
local function data_path_lines(var, path, buf)
  return {
    string.format("    const char *%s = %s;", var, util.c_string(path)),
    "    if (args->data) {   // --data DIR: the one of that name in DIR",
    string.format("        const char *base = strrchr(%s, '/');", var),
    string.format("        snprintf(%s, sizeof %s, \"%%s/%%s\", args->data, base ? base + 1 : %s);", buf, buf, var),
    string.format("        %s = %s;", var, buf),
    "    }",
  }
end

-- The validation set of a CSV or image folder source: its own file (opened by
-- `open_val`), a random split of the training set with the run's seed, or none.
local function validation_lines(a, open_val, source)
  if a.val then return open_val end
  if a.val_split == 0 then return { "    memset(val, 0, sizeof *val);   // no validation data" } end
  return {
    string.format("    // validation: %s of the training samples, drawn at random with the run's seed", math.type(a.val_split) == "integer"
      and tostring(a.val_split) or string.format("a fraction %s (rounded up)", lit(a.val_split))),
    "    dataset all = *train;",
    string.format("    if (dataset_random_split(&all, data_split_count(%s, all.n), args->seed, train, val, &err)) {", lit(a.val_split)),
    "        char msg[DATA_ERR_MAX + 4100];   // the message names the data set (a path of up to 4095 bytes)",
    string.format("        snprintf(msg, sizeof msg, \"%%s: %%s\", %s, err.msg);", source),
    "        die(msg);",
    "    }",
    "    dataset_free(&all);",
  }
end

local function c_columns(cols)
  local out = {}
  for i, c in ipairs(cols) do
    out[i] = type(c) == "string" and string.format("{ %s, -1 }", util.c_string(c)) or string.format("{ NULL, %d }", c)
  end
  return table.concat(out, ", ")
end

-- The tail CSV and ImageFolder share: the train source opened from o.<var> = <train>, the
-- val source (a.val, through validation_lines) with the same options and o.<var> = v<var>
-- after the val_first lines; no test source.
local function train_and_val_lines(lines, a, how)
  local var, open = how.var, how.open
  for _, x in ipairs(data_path_lines(var, how.train, "buf")) do lines[#lines + 1] = x end
  lines[#lines + 1] = string.format("    o.%s = %s;", var, var)
  lines[#lines + 1] = string.format("    if (%s(&o, train, &err)) die(err.msg);", open)
  local open_val = { "    char vbuf[4096];" }
  for _, x in ipairs(data_path_lines("v" .. var, a.val or "", "vbuf")) do open_val[#open_val + 1] = x end
  for _, x in ipairs(how.val_first or {}) do open_val[#open_val + 1] = x end
  open_val[#open_val + 1] = string.format("    o.%s = v%s;", var, var)
  open_val[#open_val + 1] = string.format("    if (%s(&o, val, &err)) die(err.msg);", open)
  for _, x in ipairs(validation_lines(a, open_val, var)) do lines[#lines + 1] = x end
  lines[#lines + 1] = "    (void)test;"
  lines[#lines + 1] = "    *has_test = 0;"
  return lines
end

-- CSV { ... }: the columns by name, parsed once at start (runtime/csv.c); a classifier's
-- classes must be the model's (cross_entropy's scores)
csv_open_lines = function(data, g)
  local a = data.args
  local nclasses = type(a.classes) == "table" and #a.classes or a.classes or 0
  local r = index_ranges(g)[a.targets]
  if nclasses > 0 and r and r.hi ~= nclasses then
    diag.fatal(diag.key_where(data.where, "classes"), string.format("CSV: classes = %d, but the model's %s scores %d classes",
      nclasses, "cross_entropy", r.hi))
  end
  local lines = {
    "    // the columns by header name ({ name, -1 }) or 0-based index ({ NULL, i }), parsed once",
    string.format("    static const csv_column columns[] = { %s };", c_columns(a.columns)),
    string.format("    static const csv_column target[] = { %s };", c_columns(a.target)),
  }
  if type(a.classes) == "table" then
    local names = {}
    for i, n in ipairs(a.classes) do names[i] = util.c_string(n) end
    lines[#lines + 1] = string.format("    static const char *const class_names[] = { %s };", table.concat(names, ", "))
  end
  lines[#lines + 1] = string.format("    csv_opts o = { .delimiter = %d, .header = %d, .features = columns, .nfeatures = %d, .targets = target, .ntargets = %d,",
    a.delimiter:byte(), a.header and 1 or 0, #a.columns, #a.target)
  lines[#lines + 1] = string.format("                   .classes = %d, .class_names = %s, .input = %s, .target = %s };   // delimiter %s",
    nclasses, type(a.classes) == "table" and "class_names" or "NULL", util.c_string(a.inputs), util.c_string(a.targets),
    util.c_string(a.delimiter))
  lines[#lines + 1] = "    char buf[4096];"
  return train_and_val_lines(lines, a, { var = "path", train = a.train, open = "csv_open" })
end

-- ImageFolder { ... }: every image decoded, resized and normalised once at start
-- (runtime/images.c); the augmentation is the training loader's (augment_code)
image_open_lines = function(data, g)
  local a = data.args
  local r = index_ranges(g)[a.targets]
  local function per_channel(v, default)
    local out = {}
    for c = 1, a.channels do out[c] = lit(v and v[c] or default, "f") end
    return table.concat(out, ", ")
  end
  local lines = {
    string.format("    image_folder_opts o = { .channels = %d, .height = %d, .width = %d, .mean = { %s }, .std = { %s },", a.channels,
      a.size[1], a.size[2], per_channel(a.mean, 0), per_channel(a.std, 1)),
    string.format("                            .input = %s, .target = %s, .max_classes = %d };", util.c_string(a.inputs),
      util.c_string(a.targets), r and r.hi or 0),
    "    char buf[4096];",
  }
  return train_and_val_lines(lines, a, { var = "root", train = a.root, open = "image_folder_open",
    val_first = { "    o.classes_from = root;   // the same class folders, so the same labels" } })
end

-- The training loader's augmentation (ImageFolder's random_crop, random_horizontal_flip):
-- the definition before open_data and the loader_opts member; "" for none.
local function augment_code(sp)
  local data = sp.train.data
  local a = data.args
  if data.kind ~= "ImageFolder" or (not a.random_crop and a.random_horizontal_flip == 0) then return "", "NULL" end
  local fill = {}
  for c = 1, a.channels do   -- a zero pixel, normalised
    local mean, std = a.mean and a.mean[c] or 0, a.std and a.std[c] or 1
    fill[c] = lit(-mean / std, "f")
  end
  local def = table.concat({
    "// training images only: RandomCrop(size, padding) then RandomHorizontalFlip(p), drawn per (seed, epoch, sample)",
    string.format("static const augment_opts augmentation = { .field = %s, .padding = %d, .hflip = %s, .fill = { %s } };",
      util.c_string(a.inputs), a.random_crop and a.random_crop.padding or 0, lit(a.random_horizontal_flip), table.concat(fill, ", ")),
    "", "" }, "\n")
  return def, "&augmentation"
end

-- What the data source and the loggers add to a program's runtime: image folders link
-- libpng and libjpeg (runtime/images.c), an MLFlowLogger with a sqlite:/// tracking_uri
-- libsqlite3 (runtime/mlflowdb.c); no other program carries them.
function emit_train.data_runtime(sp)
  local images = sp.train and sp.train.data and sp.train.data.kind == "ImageFolder"
  local sqlite = false
  for _, lg in ipairs(sp.train and sp.train.loggers or {}) do
    sqlite = sqlite or (lg.kind == "MLFlowLogger" and require("spec").mlflow_store(lg.args).db ~= nil)
  end
  local skip = {}
  if not images then skip["runtime/images.c"] = true end
  if not sqlite then skip["runtime/mlflowdb.c"] = true end
  return { skip = skip, ldlibs = (images and " -lpng -ljpeg" or "") .. (sqlite and " -lsqlite3" or "") }
end

local function data_code(sp, fields, ctype, g)
  local data = sp.train.data
  local a = data.args
  local open
  if data.kind == "FashionMNIST" then
    open = {
      string.format("    const char *root = args->data ? args->data : %s;", util.c_string(a.root)),
      string.format("    fashion_opts o = { %d, %s, %s };   // val_split, mean, std%s", a.val_split,
        a.normalize and lit(a.mean, "f") or "0.0f", a.normalize and lit(a.std, "f") or "1.0f",
        a.normalize and "" or " (pixels scaled to [0, 1])"),
      "    if (fashion_open(root, &o, train, val, test, &err)) die(err.msg);",
      "    *has_test = 1;",
    }
  elseif data.kind == "Synthetic" then
    local rows = {}
    for _, f in ipairs(fields) do
      local d = f.decl
      local dist = d.dist or (f.dtype == "int64" and "randint" or "uniform")
      local lo, hi
      if dist == "uniform" then lo, hi = d.low or 0, d.high or 1
      elseif dist == "normal" then lo, hi = d.low or 0, d.high or 1
      elseif dist == "bernoulli" then lo, hi = d.low or 0.5, 0
      else lo, hi = d.low or 0, d.high end
      local shape = {}
      for i, x in ipairs(f.shape) do shape[i] = tostring(x) end
      rows[#rows + 1] = string.format("        { %s, %s, %d, { %s }, %s, %s, %s },", util.c_string(f.name),
        f.dtype == "int64" and "DT_I64" or "DT_F32", #f.shape, #shape > 0 and table.concat(shape, ", ") or "0",
        DIST[dist], lit(lo), lit(hi))
    end
    open = {
      "    // every sample is a pure function of (seed, field, index): the same data on every run",
      "    static const synth_field_spec fields[] = {",
      join(rows),
      "    };",
      "    dataset all;",
      string.format("    if (synth_open(fields, %d, %d, args->seed, &all, &err)) die(err.msg);", #fields, a.size + a.val_size),
      string.format("    if (dataset_split(&all, %d, train, val, &err)) die(err.msg);", a.val_size),
      "    dataset_free(&all);",
      "    (void)test;",
      "    *has_test = 0;",
    }
  elseif data.kind == "Npy" then
    -- uint8 becomes float32 / 255 (images), integers int64, floats float32; the files
    -- (the spec's, or --data's) must have the rows and dtypes generated for, and class
    -- or embedding indices must be in range (npy_dataset_open checks)
    local rows = {}
    local ranges = index_ranges(g)
    for _, f in ipairs(fields) do
      local kind = f.npy.descr:sub(2)
      local out = f.dtype == "int64" and "DT_I64" or "DT_F32"
      local dtypes = kind == "u1" and "1u << DT_U8" or f.dtype == "int64" and "1u << DT_I32 | 1u << DT_I64"
        or "1u << DT_F32 | 1u << DT_F64"
      local shape = {}
      for i, x in ipairs(f.shape) do shape[i] = tostring(x) end
      local r = ranges[f.name]
      rows[#rows + 1] = string.format("        { .name = %s, .path = %s, .convert = 1, .out_dtype = %s, .scale = %s, .mean = 0.0f, .std = 1.0f,\n" ..
        "          .check = 1, .ndim = %d, .shape = { %s }, .dtypes = %s%s },", util.c_string(f.name), util.c_string(f.npy.path), out,
        kind == "u1" and "1.0f / 255.0f" or "1.0f", #f.shape, #shape > 0 and table.concat(shape, ", ") or "0", dtypes,
        r and string.format(", .lo = 0, .hi = %d, .except = %d, .range_what = %s", r.hi, r.except, util.c_string(r.what)) or "")
    end
    open = {
      string.format("    npy_field_spec fields[] = {\n%s\n    };", join(rows)),
      "    char paths[sizeof fields / sizeof fields[0]][4096];",
      "    for (size_t i = 0; args->data && i < sizeof fields / sizeof fields[0]; i++) {   // --data DIR: files in DIR",
      "        const char *base = strrchr(fields[i].path, '/');",
      "        snprintf(paths[i], sizeof paths[i], \"%s/%s\", args->data, base ? base + 1 : fields[i].path);",
      "        fields[i].path = paths[i];",
      "    }",
      "    dataset all;",
      string.format("    if (npy_dataset_open(fields, %d, &all, &err)) die(err.msg);", #fields),
      string.format("    if (dataset_split(&all, %d, train, val, &err)) die(err.msg);", a.val_split),
      "    dataset_free(&all);",
      "    (void)test;",
      "    *has_test = 0;",
    }
  elseif data.kind == "Tokens" then
    -- every token must fit the embedding and the classes it indexes (tokens_open checks;
    -- the graph stage set the fields' bound, `high`, to it)
    local vocab = 0
    for _, f in ipairs(fields) do
      if f.high > 0 and (vocab == 0 or f.high < vocab) then vocab = f.high end
    end
    local function open_one(path, stride, into)
      return {
        string.format("    o.path = %s;", util.c_string(path)),
        "    if (args->data) {   // --data DIR: the file of that name in DIR",
        string.format("        const char *base = strrchr(%s, '/');", util.c_string(path)),
        string.format("        snprintf(buf, sizeof buf, \"%%s/%%s\", args->data, base ? base + 1 : %s);", util.c_string(path)),
        "        o.path = buf;",
        "    }",
        string.format("    o.stride = %s;", stride),
        string.format("    if (tokens_open(&o, %s, &err)) die(err.msg);", into),
      }
    end
    open = {
      string.format("    // llm.c token files: windows of %d + 1 tokens, %s; validation: sequential windows", a.context,
        a.random and "at every offset (the seeded shuffle draws them at random)" or "sequential"),
      string.format("    tokens_opts o = { .context = %d, .vocab = %d, .input = %s, .target = %s };", a.context, vocab,
        util.c_string(a.inputs), util.c_string(a.targets)),
      "    char buf[4096];",
      join(open_one(a.train, a.random and "1" or tostring(a.context), "train")),
    }
    if a.val then
      open[#open + 1] = join(open_one(a.val, tostring(a.context), "val"))
    else
      open[#open + 1] = "    memset(val, 0, sizeof *val);   // no validation file"
    end
    open[#open + 1] = "    (void)test;"
    open[#open + 1] = "    *has_test = 0;"
  elseif data.kind == "CSV" or data.kind == "ImageFolder" then
    open = data.kind == "CSV" and csv_open_lines(data, g) or image_open_lines(data, g)
  else
    diag.fatal(data.where, string.format("%s data is not supported by the C backend yet", data.kind))
  end

  local bind = {}
  for _, f in ipairs(fields) do
    local per = util.numel(f.shape)
    if f.dtype == "int64" then
      bind[#bind + 1] = string.format("    b->%s = (int64_t *)db->data[dataset_field(ds, %s)];", cname(f.name), util.c_string(f.name))
    elseif ctype == "float" then
      bind[#bind + 1] = string.format("    b->%s = (real *)db->data[dataset_field(ds, %s)];", cname(f.name), util.c_string(f.name))
    else
      -- the loader yields float32; a 64-true program converts once, where data enters
      bind[#bind + 1] = string.format("    static real %s_buf[BATCH_MAX * %d];", cname(f.name), per)
      bind[#bind + 1] = string.format("    const float *%s_src = db->data[dataset_field(ds, %s)];", cname(f.name), util.c_string(f.name))
      bind[#bind + 1] = string.format("    for (int64_t i = 0; i < db->size * %d; i++) %s_buf[i] = %s_src[i];", per, cname(f.name), cname(f.name))
      bind[#bind + 1] = string.format("    b->%s = %s_buf;", cname(f.name), cname(f.name))
    end
  end
  local desc = data.kind .. (data.kind == "FashionMNIST" and string.format(" (val_split %d)", a.val_split) or "")
  if data.kind == "CSV" then desc = string.format("CSV %s", (a.train:gsub("%*/", "* /"))) end
  if data.kind == "ImageFolder" then
    desc = string.format("ImageFolder %s (%d x %d x %d)", (a.root:gsub("%*/", "* /")), a.channels, a.size[1], a.size[2])
  end
  return join(open), join(bind), desc
end

---------------------------------------------------------------------------
-- optimizer (torch.optim's single-tensor update rules)

-- The parameter groups over the parameters' layout (plan.lua's state.params, in
-- order), as torch.optim's param_groups: a parameter is in the first of the
-- optimizer's `groups` whose Lua pattern its name matches, else (AdamW's
-- decay_min_ndim) in the undecayed group when it has fewer dimensions, else in the
-- optimizer's own group.  Returns the groups { lr, weight_decay, label } and the runs
-- { begin, finish, group, names } of neighbouring parameters in one group, covering
-- [0, NUM_PARAMS) (alignment padding goes with the run before) except the frozen
-- parameters' (`frozen[name]`, train.freeze: requires_grad = False, so torch.optim
-- skips them: no update, no weight decay); nil when every parameter is in one group
-- with the optimizer's own settings.  `mine` (a training_step's optimizer: { name,
-- params (its spec's params, as text), set (its parameters' names) }): the groups are
-- over its parameters only (the frozen ones left out), each run of neighbours in one
-- group ending at its last parameter's end (another optimizer's parameters may follow);
-- nil when they are all in the optimizer's own group.
local function param_groups(opt, params, frozen, mine)
  local a = opt.args
  local any_frozen = next(frozen) ~= nil and not mine
  local groups = {}
  for i, gs in ipairs(a.groups or {}) do
    groups[i] = { lr = gs.lr or a.lr, weight_decay = gs.weight_decay or a.weight_decay, pattern = gs.params,
                  label = string.format("groups[%d] (params = %s)", i, (util.c_string(gs.params):gsub("%*/", "* /"))),
                  where = gs.where, used = 0 }
  end
  local nodecay = (a.decay_min_ndim or 0) > 0 and a.weight_decay ~= 0
    and { lr = a.lr, weight_decay = 0.0, used = 0, label = string.format("fewer than %d dimensions: no decay", a.decay_min_ndim) }
  local default = { lr = a.lr, weight_decay = a.weight_decay, used = 0, label = "the optimizer's own" }
  if #groups == 0 and not nodecay and not any_frozen then return nil end
  groups[#groups + 1] = nodecay or nil
  groups[#groups + 1] = default
  for i, gr in ipairs(groups) do gr.index = i - 1 end
  local FROZEN = { used = 0 }
  local function group_of(p)
    for _, gr in ipairs(groups) do
      if gr.pattern then
        local ok, hit = pcall(string.find, p.name, gr.pattern)
        if not ok then
          diag.fatal(gr.where or opt.where, string.format("%s: %s is not a Lua pattern: %s", opt.kind, gr.label,
            (tostring(hit):gsub("^.-:%d+: ", ""))))
        end
        if hit then return gr end
      end
    end
    if nodecay and #p.entry.shape < a.decay_min_ndim then return nodecay end
    return default
  end
  local runs = {}
  local prev   -- (mine: the index of the last parameter put in a run)
  for i, p in ipairs(params) do
    if mine and frozen[p.name] then
      group_of(p).used = group_of(p).used + 1   -- (a group whose parameters are all frozen matched them: no error)
    elseif mine and not mine.set[p.name] then
      -- another optimizer's: no run goes across it
    elseif mine then
      local gr = group_of(p)
      gr.used = gr.used + 1
      local last = runs[#runs]
      if last and last.group == gr and prev == i - 1 then
        last.finish, last.count = p.offset + p.numel, last.count + 1
      else
        runs[#runs + 1] = { begin = p.offset, finish = p.offset + p.numel, group = gr, first = p.name, count = 1 }
      end
      runs[#runs].last, prev = p.name, i
    else
      local gr = group_of(p)
      gr.used = gr.used + 1   -- (a group whose parameters are all frozen matched them: no error)
      if frozen[p.name] then gr = FROZEN end
      local last = runs[#runs]
      local finish = params[i + 1] and params[i + 1].offset or nil
      if last and last.group == gr then
        last.finish, last.count = finish, last.count + 1
      else
        if last then last.finish = p.offset end
        runs[#runs + 1] = { begin = p.offset, finish = finish, group = gr, first = p.name, count = 1 }
      end
      runs[#runs].last = p.name
    end
  end
  for _, gr in ipairs(groups) do
    if gr.pattern and gr.used == 0 then
      diag.fatal(gr.where or opt.where, string.format("%s: %s matches no parameter of %s", opt.kind, gr.label,
        mine and string.format("optimizer '%s' (its parameters: %s)", mine.name, mine.params) or "the model"))
    end
  end
  local kept, skipped = {}, {}
  for _, r in ipairs(runs) do
    r.finish = r.finish or "NUM_PARAMS"
    r.names = r.count == 1 and r.first or string.format("%s .. %s (%d tensors)", r.first, r.last, r.count)
    if r.group == FROZEN then skipped[#skipped + 1] = r.names else kept[#kept + 1] = r end
  end
  return groups, kept, skipped
end

-- optimizer_step's C for the lowered table's optimizer, from gen/optimizers.lua's rule.
-- `floor`: the schedule's lr for every group is floor + (lr - floor) × ratio (0: it
-- scales each group's lr; false: it sets every group's lr, which a group may not give).
-- `frozen[name]`: parameters train.freeze leaves out of the update.
-- `sharded` (fsdp's "SHARD_GRAD_OP" or "FULL_SHARD", gen/strategy.lua): each state buffer
-- holds this rank's shard of the flat arena, [fsdp_lo(), fsdp_hi()) of runtime/ddp.h, and
-- the update runs over that range only (the state indexed from the shard's start; under
-- FULL_SHARD the parameters too, fsdp_param_shard()); checkpoints hold the
-- full tensors (the load keeps this rank's part; the save gathers them: emit_c.lua).
-- `only`: runs { begin, finish, names } of the parameters it updates (a training_step's
-- optimizer, gen/user_step.lua) and `mine`, the optimizer (param_groups'): its
-- parameter groups are over those only.
local function optimizer_code(k16, opt, sfx, params, floor, frozen, sharded, only, mine)
  local STATE16, OPT16, PAR_FOR, LD, ST, LDO, STO = k16.STATE16, k16.OPT16, k16.PAR_FOR, k16.LD, k16.ST, k16.LDO, k16.STO
  local a = opt.args
  local rule = optimizers.rule(opt.kind)
  local f = sfx == "f32" and "f" or ""
  local fields, alloc, save, load, groups_out, free = {}, {}, {}, {}, {}, {}
  local states = rule.states(a)
  local init = rule.init and rule.init(a) or {}
  for _, st in ipairs(states) do
    -- float32 beside 16-true's float16 parameters (see OPT16), else like the parameters
    local ct, dt = "state_t", "state_dtype()"
    if STATE16 and not OPT16 then ct, dt = "real", "CKPT_F32" end
    local n = sharded and "fsdp_shard_len()" or "NUM_PARAMS"
    fields[#fields + 1] = sharded and string.format("    %s *%s;   // FSDP: this rank's shard, [fsdp_lo(), fsdp_hi()) of the parameters' layout", ct, st)
      or string.format("    %s *%s;   // NUM_PARAMS, laid out like the parameters%s", ct, st, ct == "real" and " (float32: see optimizer_step)" or "")
    alloc[#alloc + 1] = sharded and string.format("    o->%s = fsdp_shard_alloc();", st) or string.format("    o->%s = calloc(NUM_PARAMS, sizeof(%s));", st, ct)
    alloc[#alloc + 1] = string.format("    if (!o->%s) return -1;", st)
    if init[st] and init[st] ~= 0 then
      local v = string.format("(real)%s", lit(init[st]))
      alloc[#alloc + 1] = string.format("    for (size_t i = 0; i < %s; i++) o->%s[i] = %s;   // torch: full_like(p, %s)",
        n, st, ct == "real" and v or STO(v), lit(init[st]))
    end
    free[#free + 1] = string.format("    free(o->%s);", st)
    save[#save + 1] = string.format("    add_tensors(&w, model_param_info, NUM_PARAM_TENSORS, o->%s, %s, \"optimizer.%s.\");", st, dt, st)
    if sharded then
      load[#load + 1] = string.format("    read_tensors(&f, model_param_info, NUM_PARAM_TENSORS, full, %s, \"optimizer.%s.\");", dt, st)
      load[#load + 1] = string.format("    fsdp_keep_shard(o->%s, full);   // FSDP: this rank's part of the full tensors", st)
    else
      load[#load + 1] = string.format("    read_tensors(&f, model_param_info, NUM_PARAM_TENSORS, o->%s, %s, \"optimizer.%s.\");", st, dt, st)
    end
    groups_out[#groups_out + 1] = string.format("        { model_param_info, NUM_PARAM_TENSORS, %s, \"optimizer.%s.\" },", dt, st)
  end
  if rule.fields then
    local fl, al = rule.fields(a)
    for _, x in ipairs(fl) do fields[#fields + 1] = x end
    for _, x in ipairs(al) do alloc[#alloc + 1] = x end
  end
  local stateless = #fields == 0
  if stateless then
    fields[1] = "    int unused;   // this optimizer keeps no state"
    alloc[1] = "    o->unused = 0;"
  end
  local desc = rule.desc(a, opt.kind)
  local groups, runs, skipped = param_groups(opt, params, frozen, only and mine)
  if only and groups then only = nil   -- (the groups' runs are the optimizer's parameters)
  elseif only then runs = only end
  local step = { string.format("    // %s", desc), "    (void)o; (void)mom; (void)step;   // not every rule reads them" }
  -- the runs (parameter groups, a training_step's parameters) share one thread team, each
  -- split over it without a barrier between them (they are disjoint): a team per run cost
  -- a GPT's 34 runs a fork and a join each
  local RUNS_LOOP = (k16.parallel and "    #pragma omp parallel\n" or "")
    .. "    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {"
  local LR, WD, decays
  if groups then
    decays = false
    for _, gr in ipairs(groups) do decays = decays or gr.weight_decay ~= 0 end
    local base = a.lr
    for _, gr in ipairs(groups) do
      if gr.lr ~= base and floor == false then
        diag.fatal(gr.where or opt.where, string.format("%s: %s gives its own lr, but the scheduler sets every group's "
          .. "learning rate (torch's OneCycleLR with one max_lr does too); leave lr out", opt.kind, gr.label))
      end
      if gr.lr ~= base and base == (floor or 0) then
        diag.fatal(gr.where or opt.where, string.format("%s: %s gives its own lr, but the optimizer's lr is %s, the schedule's "
          .. "floor, so no group's lr can be scaled from it", opt.kind, gr.label, lit(base)))
      end
      gr.ratio = gr.lr == base and 1.0 or (gr.lr - (floor or 0)) / (base - (floor or 0))
    end
    step[#step + 1] = "    // the parameter groups (torch.optim's param_groups): runs of parameters in layout order"
    for _, gr in ipairs(groups) do
      step[#step + 1] = string.format("    //   group %d: lr %s, weight_decay %s: %s", gr.index, lit(gr.lr), lit(gr.weight_decay), gr.label)
    end
    for _, names in ipairs(skipped) do
      step[#step + 1] = string.format("    //   frozen (train.freeze, requires_grad = False): not updated: %s", names)
    end
    step[#step + 1] = "    static const struct { size_t begin, end; double lr_ratio, weight_decay; } runs[] = {"
    for _, r in ipairs(runs) do
      step[#step + 1] = string.format("        { %d, %s, %s, %s },   // group %d: %s", r.begin, tostring(r.finish),
        lit(r.group.ratio), lit(r.group.weight_decay), r.group.index, r.names)
    end
    step[#step + 1] = "    };"
    step[#step + 1] = RUNS_LOOP
    if floor and floor ~= 0 then
      step[#step + 1] = string.format("    const double lr_g = %s + (lr - %s) * runs[r].lr_ratio;   // the schedule's floor stays",
        lit(floor), lit(floor))
    else
      step[#step + 1] = "    const double lr_g = lr * runs[r].lr_ratio;   // the schedule scales each group's lr"
    end
    LR, WD = "lr_g", "runs[r].weight_decay"
    if decays and rule.decay == "l2" then step[#step + 1] = "    const real wd = (real)runs[r].weight_decay;" end
  else
    decays = a.weight_decay ~= 0
    LR, WD = "lr", lit(a.weight_decay)
    if decays and rule.decay == "l2" then step[#step + 1] = string.format("    const real wd = (real)%s;", WD) end
  end
  for _, x in ipairs(rule.consts(a, { lr = LR, f = f })) do step[#step + 1] = x end
  if decays and rule.decay == "decoupled" then
    step[#step + 1] = string.format("    const real decay = (real)(1.0 - %s * %s);   // decoupled weight decay", LR, WD)
  end
  local si, P, G = "i", "m->params[i]", "m->grads[i]"   -- the state's index, the parameter, its gradient
  if sharded then
    table.insert(step, 3, "    const size_t lo = fsdp_lo(), hi = fsdp_hi();   // FSDP: this rank updates its shard of the parameters")
    si = "i - lo"
  end
  if sharded == "FULL_SHARD" then
    table.insert(step, 4, "    state_t *ps = fsdp_param_shard();   // FULL_SHARD: the parameters this rank holds, [lo, hi)")
    table.insert(step, 5, "    const state_t *gs = fsdp_grad_shard();   // and their averaged gradients")
    table.insert(step, 6, "    (void)m;   // (its parameters and gradients are the gathered unit's buffers)")
    P, G = "ps[i - lo]", "gs[i - lo]"
  end
  if only then
    -- a training_step's optimizer: only its parameters' runs
    step[#step + 1] = "    static const struct { size_t begin, end; } runs[] = {"
    for _, r in ipairs(only) do step[#step + 1] = string.format("        { %d, %d },   // %s", r.begin, r.finish, r.names) end
    step[#step + 1] = "    };"
    step[#step + 1] = RUNS_LOOP
  end
  step[#step + 1] = (groups or only) and k16.parallel and "    #pragma omp for schedule(static) nowait" or PAR_FOR
  if sharded then
    step[#step + 1] = groups and "    for (size_t i = runs[r].begin > lo ? runs[r].begin : lo; i < (runs[r].end < hi ? runs[r].end : hi); i++) {"
      or "    for (size_t i = lo; i < hi; i++) {"
  else
    step[#step + 1] = (groups or only) and "    for (size_t i = runs[r].begin; i < runs[r].end; i++) {" or "    for (size_t i = 0; i < NUM_PARAMS; i++) {"
  end
  step[#step + 1] = string.format("        real p = %s;", LD(P))
  step[#step + 1] = string.format("        real g = %s%s;", (rule.maximize and a.maximize) and "-" or "", LD(G))
  if decays and rule.decay == "l2" then step[#step + 1] = "        g += wd * p;   // L2 penalty" end
  if decays and rule.decay == "decoupled" then step[#step + 1] = "        p *= decay;" end
  if STATE16 and not OPT16 and #states > 0 then
    step[#step + 1] = "        // the state stays float32: float16 would round 0.001·g² to 0 (see emit_train.lua)"
  end
  for _, st in ipairs(states) do step[#step + 1] = string.format("        real %s = %s;", st, LDO(string.format("o->%s[%s]", st, si))) end
  for _, x in ipairs(rule.update(a, { f = f })) do step[#step + 1] = x end
  for _, st in ipairs(states) do step[#step + 1] = string.format("        o->%s[%s] = %s;", st, si, STO(st)) end
  step[#step + 1] = string.format("        %s = %s;", P, ST("p"))
  step[#step + 1] = "    }"
  if groups or only then step[#step + 1] = "    }" end
  return {
    stateless = stateless,   -- fields and alloc hold a placeholder
    saves_nothing = #save == 0,   -- save and load hold a placeholder
    desc = desc, fields = join(fields), alloc = join(alloc), step = join(step),
    save = #save > 0 and join(save) or "    (void)o;",
    load = #load == 0 and "    (void)o;" or not sharded and join(load) or join {
      "    // FSDP: each full tensor read into one buffer, this rank's shard kept",
      string.format("    %s *full = malloc(sizeof(%s) * NUM_PARAMS);", (STATE16 and not OPT16) and "real" or "state_t",
        (STATE16 and not OPT16) and "real" or "state_t"),
      "    if (!full) die(\"out of memory reading the optimizer state\");",
      join(load),
      "    free(full);",
    },
    groups = join(groups_out), free = #free > 0 and join(free) or "    (void)o;   // no state to free",
    base_momentum = rule.momentum and rule.momentum(a) or nil,
    groups_list = groups,   -- nil: one group
    runs_list = groups and runs or nil,   -- { begin, finish, group, names }: the groups' runs in layout order
  }
end

-- Lightning's LearningRateMonitor names for several parameter groups: lr-<Optimizer>/pgN
-- (N from 1, loom's group order: the spec's groups, then the optimizer's own), each the
-- group's lr at the step as optimizer_step computes it from `lr`.
local function group_lr_columns(opt, groups, floor)
  local cols = {}
  for _, gr in ipairs(groups or {}) do
    local expr = (floor and floor ~= 0) and string.format("%s + (lr - %s) * %s", lit(floor), lit(floor), lit(gr.ratio))
      or string.format("lr * %s", lit(gr.ratio))
    cols[#cols + 1] = { key = util.c_string(string.format("lr-%s/pg%d", opt.kind, gr.index + 1)), value = expr }
  end
  return cols
end

---------------------------------------------------------------------------
-- learning-rate schedule

-- OneCycleLR's piecewise annealing, as C statements: `ends` are the phases' last
-- steps (C expressions), `values` their {from, to}; torch's _annealing_cos/_linear.
local function onecycle_phases(a, ends, values)
  local lines = {
    a.total_steps and string.format("    total_steps = %d;", a.total_steps) or "    // total_steps: the run's",
    string.format("    const double pct_start = %s;", lit(a.pct_start)),
    "    double start = 0;",
  }
  for i, e in ipairs(ends) do
    local from, to = values[i][1], values[i][2]
    lines[#lines + 1] = string.format("    double end%d = %s;", i, e)
    local expr = a.anneal_strategy == "cos"
      and string.format("%s + (%s - %s) / 2.0 * (cos(PI * pct) + 1)", lit(to), lit(from), lit(to))
      or string.format("(%s - %s) * pct + %s", lit(to), lit(from), lit(from))
    local cond = i == #ends and "" or string.format("if (step <= end%d) ", i)
    lines[#lines + 1] = string.format("    %s{ double pct = (step - start) / (end%d - start); return %s; }", cond, i, expr)
    if i < #ends then lines[#lines + 1] = string.format("    start = end%d;", i) end
  end
  return lines
end

-- Whether the schedule's values depend on the run's total steps (--epochs, --max-steps)
local function schedule_spans_run(sched)
  return sched ~= nil and (sched.kind == "WarmupCosine" or sched.kind == "OneCycleLR") and not sched.args.total_steps
end

-- The schedule's counter: optimizer steps or epochs (Lightning's interval)
local function counter(a) return a.interval == "step" and "step" or "epoch" end
local function unused_counter(a)
  return string.format("    (void)%s; (void)total_steps;", a.interval == "step" and "epoch" or "step")
end

-- A closed-form schedule's lr at count `n` (C) as a C expression, and its description:
-- torch's _get_closed_form_lr (LambdaLR: base_lr × lr_lambda(n)); SequentialLR's pieces.
local function closed_form(sched, base, n)
  local a = sched.args
  if sched.kind == "StepLR" then
    return string.format("%s * pow(%s, (double)((%s) / %d))", lit(base), lit(a.gamma), n, a.step_size),
      string.format("StepLR(step_size=%d, gamma=%s)", a.step_size, lit(a.gamma))
  elseif sched.kind == "ExponentialLR" then
    return string.format("%s * pow(%s, (double)(%s))", lit(base), lit(a.gamma), n), string.format("ExponentialLR(gamma=%s)", lit(a.gamma))
  elseif sched.kind == "MultiStepLR" then
    local passed, ms = {}, {}
    for i, m in ipairs(a.milestones) do passed[i] = string.format("((%s) >= %d)", n, m); ms[i] = tostring(m) end
    return string.format("%s * pow(%s, (double)(%s))", lit(base), lit(a.gamma), table.concat(passed, " + ")),
      string.format("MultiStepLR(milestones=[%s], gamma=%s)", table.concat(ms, ", "), lit(a.gamma))
  elseif sched.kind == "LinearLR" then
    return string.format("%s * (%s + (%s - %s) * (double)((%s) < %d ? (%s) : %d) / %d)", lit(base), lit(a.start_factor),
      lit(a.end_factor), lit(a.start_factor), n, a.total_iters, n, a.total_iters, a.total_iters),
      string.format("LinearLR(start_factor=%s, end_factor=%s, total_iters=%d)", lit(a.start_factor), lit(a.end_factor), a.total_iters)
  elseif sched.kind == "CosineAnnealingLR" then
    return string.format("%s + (%s - %s) * (1.0 + cos(PI * (double)(%s) / %d)) / 2.0", lit(a.eta_min), lit(base), lit(a.eta_min), n, a.T_max),
      string.format("CosineAnnealingLR(T_max=%d, eta_min=%s)", a.T_max, lit(a.eta_min))
  elseif sched.kind == "LambdaLR" then
    local tree, why = lr_lambda.parse(a.lr_lambda, a.interval)
    if not tree then diag.fatal(sched.where, "LambdaLR.lr_lambda: " .. why) end
    return string.format("%s * %s", lit(base), lr_lambda.to_c(tree, n)), string.format("LambdaLR(lr_lambda=%s)", a.lr_lambda)
  end
  diag.fatal(sched.where, sched.kind .. " has no closed form here")
end

-- lr_at's body, its description, OneCycleLR's phases (for momentum_at), and the
-- schedule's floor for parameter groups (optimizer_code): every group's lr is
-- floor + (base_g - floor) × f(step), so 0 for the schedules that multiply each
-- group's lr, eta_min for CosineAnnealingLR, false for those that set it outright.
local function schedule_code(sp, opt)
  local sched = sp.train.scheduler
  local base = opt.args.lr
  if not sched then
    return string.format("    (void)step; (void)epoch; (void)total_steps;\n    return %s;", lit(base)), "constant", nil, 0
  end
  local a = sched.args
  local n = counter(a)
  if sched.kind == "StepLR" then
    return join {
      unused_counter(a),
      string.format("    return %s * pow(%s, (double)(%s / %d));", lit(base), lit(a.gamma), n, a.step_size),
    }, string.format("StepLR(step_size=%d, gamma=%s) per %s", a.step_size, lit(a.gamma), a.interval), nil, 0
  end
  if sched.kind == "ExponentialLR" then
    return join {
      unused_counter(a),
      string.format("    return %s * pow(%s, (double)%s);", lit(base), lit(a.gamma), n),
    }, string.format("ExponentialLR(gamma=%s) per %s", lit(a.gamma), a.interval), nil, 0
  end
  if sched.kind == "MultiStepLR" then
    local ms = {}
    for i, m in ipairs(a.milestones) do ms[i] = tostring(m) end
    return join {
      unused_counter(a),
      string.format("    static const int64_t milestones[] = { %s };", table.concat(ms, ", ")),
      "    int passed = 0;   // bisect_right(milestones, count)",
      string.format("    for (size_t i = 0; i < sizeof milestones / sizeof milestones[0]; i++) passed += milestones[i] <= %s;", n),
      string.format("    return %s * pow(%s, (double)passed);", lit(base), lit(a.gamma)),
    }, string.format("MultiStepLR(milestones=[%s], gamma=%s) per %s", table.concat(ms, ", "), lit(a.gamma), a.interval), nil, 0
  end
  if sched.kind == "LinearLR" then
    return join {
      unused_counter(a),
      string.format("    const int64_t t = %s < %d ? %s : %d;", n, a.total_iters, n, a.total_iters),
      string.format("    return %s * (%s + (%s - %s) * (double)t / %d);", lit(base), lit(a.start_factor), lit(a.end_factor),
        lit(a.start_factor), a.total_iters),
    }, string.format("LinearLR(start_factor=%s, end_factor=%s, total_iters=%d) per %s", lit(a.start_factor),
      lit(a.end_factor), a.total_iters, a.interval), nil, 0
  end
  if sched.kind == "CosineAnnealingLR" then
    -- torch steps it recursively; the closed form is the same curve (past T_max too)
    return join {
      unused_counter(a),
      string.format("    return %s + (%s - %s) * (1.0 + cos(PI * (double)%s / %d)) / 2.0;", lit(a.eta_min), lit(base),
        lit(a.eta_min), n, a.T_max),
    }, string.format("CosineAnnealingLR(T_max=%d, eta_min=%s) per %s", a.T_max, lit(a.eta_min), a.interval), nil, a.eta_min
  end
  if sched.kind == "LambdaLR" then
    local expr, desc = closed_form(sched, base, n)
    return join { unused_counter(a), "    return " .. expr .. ";" }, desc .. " per " .. a.interval, nil, 0
  end
  if sched.kind == "SequentialLR" then
    -- torch's SequentialLR: at count t the scheduler bisect_right(milestones, t) runs,
    -- restarted (step(0)) at its milestone: its closed form at t - milestone
    local lines, descs, ms, floor = { unused_counter(a) }, {}, {}, nil
    for i, sub in ipairs(a.schedulers) do
      local start = i == 1 and 0 or a.milestones[i - 1]
      local expr, desc = closed_form(sub, base, start == 0 and n or string.format("%s - %d", n, start))
      descs[i] = desc
      local f = sub.kind == "CosineAnnealingLR" and sub.args.eta_min or 0
      if floor == nil then floor = f elseif floor ~= f then floor = false end
      if i < #a.schedulers then
        ms[i] = tostring(a.milestones[i])
        lines[#lines + 1] = string.format("    if (%s < %d) return %s;   // %s", n, a.milestones[i], expr, desc)
      else
        lines[#lines + 1] = string.format("    return %s;   // %s", expr, desc)
      end
    end
    return join(lines), string.format("SequentialLR([%s], milestones=[%s]) per %s", table.concat(descs, ", "),
      table.concat(ms, ", "), a.interval), nil, floor
  end
  if sched.kind == "ReduceLROnPlateau" then
    -- its lr is state, stepped on the metric after each validation (callbacks_code) and
    -- read by the training step from there; lr_at gives the lr it starts from
    return "    (void)step; (void)epoch; (void)total_steps;\n    return " .. lit(base) .. ";   // the initial lr: ReduceLROnPlateau's current one is run state (train.c)",
      string.format("ReduceLROnPlateau(mode='%s', factor=%s, patience=%d, threshold=%s, threshold_mode='%s', cooldown=%d, min_lr=%s, eps=%s) on %s",
        a.mode, lit(a.factor), a.patience, lit(a.threshold), a.threshold_mode, a.cooldown, lit(a.min_lr), lit(a.eps), a.monitor),
      nil, false   -- each group's lr is reduced on its own (min_lr, eps): a group may not give its own
  end
  if sched.kind == "WarmupCosine" then
    return join {
      "    (void)epoch;",
      string.format("    const int64_t warmup = %d;", a.warmup_steps),
      a.total_steps and string.format("    total_steps = %d;", a.total_steps) or "    // total_steps: the run's",
      string.format("    if (step < warmup) return %s * (double)(step + 1) / warmup;", lit(base)),
      "    double progress = (double)(step - warmup) / (double)(total_steps > warmup ? total_steps - warmup : 1);",
      "    if (progress > 1) progress = 1;",
      string.format("    return %s + (%s - %s) * 0.5 * (1.0 + cos(PI * progress));", lit(a.min_lr), lit(base), lit(a.min_lr)),
    }, string.format("linear warmup for %d steps, then cosine to %s", a.warmup_steps, lit(a.min_lr)), nil,
      a.min_lr == 0 and 0 or false
  end
  if sched.kind == "OneCycleLR" then
    -- torch.optim.lr_scheduler.OneCycleLR: its phases' last steps and lr from/to
    local initial = a.max_lr / a.div_factor
    local min_lr = initial / a.final_div_factor
    local ends = a.three_phase
      and { "pct_start * total_steps - 1", "2 * pct_start * total_steps - 2", "total_steps - 1.0" }
      or { "pct_start * total_steps - 1", "total_steps - 1.0" }
    local lrs = a.three_phase and { { initial, a.max_lr }, { a.max_lr, initial }, { initial, min_lr } }
      or { { initial, a.max_lr }, { a.max_lr, min_lr } }
    local body = onecycle_phases(a, ends, lrs)
    table.insert(body, 1, "    (void)epoch;")
    return join(body), string.format("OneCycleLR(max_lr=%s, pct_start=%s, %s)", lit(a.max_lr), lit(a.pct_start), a.anneal_strategy),
      { ends = ends }, false
  end
  diag.fatal(sched.where, sched.kind .. " is not supported by the C backend yet")
end

---------------------------------------------------------------------------
-- clipping

-- `sharded` (fsdp's SHARD_GRAD_OP): this rank's averaged gradients are its shard,
-- [fsdp_lo(), fsdp_hi()): the norm's sum is over the shard, then over ranks, and only the
-- shard is scaled (the optimizer reads only it).  FULL_SHARD: the shard is its own buffer
-- (runtime/ddp.h's fsdp_grad_shard(), indexed from fsdp_lo()).
local function clip_code(k16, sp, sharded)
  local full = sharded == "FULL_SHARD"
  local STATE16, OPT16, PAR_FOR, LD, ST, LDO, STO = k16.STATE16, k16.OPT16, k16.PAR_FOR, k16.LD, k16.ST, k16.LDO, k16.STO
  local c = sp.train.clip
  if not c then return "    (void)m;\n    return NAN;   // (no norm: no clipping)", "none" end
  if c.clip_val then
    -- (FULL_SHARD: over the shard, its own buffer; else over the whole arena)
    local G, n = full and "gs[i]" or "m->grads[i]", full and "count" or "NUM_PARAMS"
    return join {
      string.format("    const real v = %s;", lit(c.clip_val)),
      full and "    state_t *gs = fsdp_grad_shard();   // FSDP FULL_SHARD: this rank's shard of the averaged gradients" or nil,
      full and "    const size_t count = fsdp_hi() - fsdp_lo();" or nil,
      full and "    (void)m;" or nil,
      PAR_FOR,
      STATE16 and string.format("    for (size_t i = 0; i < %s; i++) { real g = %s; %s = %s; }", n, LD(G), G, ST("g > v ? v : (g < -v ? -v : g)"))
        or string.format("    for (size_t i = 0; i < %s; i++) %s = %s > v ? v : (%s < -v ? -v : %s);", n, G, G, G, G),
      "    return NAN;   // (by value: no norm)",
    }, string.format("by value, to [-%s, %s]", lit(c.clip_val), lit(c.clip_val))
  end
  local inf = c.norm_type == math.huge
  local body = {
    "    // fixed-size chunks summed in a fixed order: the same bits on every run",
    "    enum { CHUNKS = 64 };",
    "    double part[CHUNKS] = {0};",
    PAR_FOR,
    "    for (int c = 0; c < CHUNKS; c++) {",
    "        size_t lo = (size_t)NUM_PARAMS * c / CHUNKS, hi = (size_t)NUM_PARAMS * (c + 1) / CHUNKS;",
    "        double s = 0;",
  }
  if sharded then
    table.insert(body, 1, "    // FSDP: this rank's shard of the averaged gradients; the norm's sum runs over every rank's")
    table.insert(body, 2, "    const size_t first = fsdp_lo(), count = fsdp_hi() - fsdp_lo();")
    body[#body - 1] = "        size_t lo = first + count * c / CHUNKS, hi = first + count * (c + 1) / CHUNKS;"
  end
  local GR = full and "gs[i - first]" or "m->grads[i]"
  if full then
    table.insert(body, 3, "    state_t *gs = fsdp_grad_shard();   // FULL_SHARD: the shard is a buffer of its own")
    table.insert(body, 4, "    (void)m;")
  end
  local G = LD(GR)
  if inf then
    body[#body + 1] = string.format("        for (size_t i = lo; i < hi; i++) s = fmax(s, fabs((double)%s));", G)
  elseif c.norm_type == 2 then
    -- 8 partial sums a chunk (in the order of their lanes): the compiler vectorises
    -- them, where one running sum would be one dependent add per element
    local Gj = LD((GR:gsub("%[i", "[i + j")))
    body[#body + 1] = "        double lane[8] = {0};"
    body[#body + 1] = "        size_t i = lo;"
    body[#body + 1] = string.format("        for (; i + 8 <= hi; i += 8) for (int j = 0; j < 8; j++) lane[j] += (double)%s * %s;", Gj, Gj)
    body[#body + 1] = string.format("        for (; i < hi; i++) s += (double)%s * %s;", G, G)
    body[#body + 1] = "        for (int j = 0; j < 8; j++) s += lane[j];"
  else
    body[#body + 1] = string.format("        for (size_t i = lo; i < hi; i++) s += pow(fabs((double)%s), %s);", G, lit(c.norm_type))
  end
  body[#body + 1] = "        part[c] = s;"
  body[#body + 1] = "    }"
  body[#body + 1] = "    double total = 0;"
  if inf then
    body[#body + 1] = "    for (int c = 0; c < CHUNKS; c++) total = fmax(total, part[c]);"
  else
    body[#body + 1] = "    for (int c = 0; c < CHUNKS; c++) total += part[c];"
    if sharded then body[#body + 1] = "    ddp_sum(&total, 1);   // FSDP: over every rank's shard" end
    body[#body + 1] = c.norm_type == 2 and "    total = sqrt(total);" or string.format("    total = pow(total, 1.0 / %s);", lit(c.norm_type))
  end
  body[#body + 1] = string.format("    double coef = %s / (total + 1e-6);   // torch.nn.utils.clip_grad_norm_", lit(c.max_norm))
  body[#body + 1] = "    if (coef >= 1) return total;"
  body[#body + 1] = PAR_FOR
  body[#body + 1] = sharded and (STATE16 and string.format("    for (size_t i = first; i < first + count; i++) %s = %s;", GR, ST(G .. " * (real)coef"))
      or string.format("    for (size_t i = first; i < first + count; i++) %s *= (real)coef;", GR))
    or STATE16 and string.format("    for (size_t i = 0; i < NUM_PARAMS; i++) m->grads[i] = %s;", ST(G .. " * (real)coef"))
    or "    for (size_t i = 0; i < NUM_PARAMS; i++) m->grads[i] *= (real)coef;"
  body[#body + 1] = "    return total;   // the norm before clipping (train/grad_norm)"
  return join(body), string.format("by norm (%s-norm) to %s", inf and "inf" or lit(c.norm_type), lit(c.max_norm))
end

---------------------------------------------------------------------------
-- 16-mixed: dynamic loss scaling, as torch.cuda.amp.GradScaler() with its defaults
-- (what Fabric's MixedPrecision("16-mixed") creates).  The backward starts from
-- loss × scale; before clipping the gradients are unscaled and checked (found_inf);
-- a step with an inf or NaN gradient is skipped (parameters, optimizer state, its
-- step count and the schedule stay: Fabric skips the scheduler step too) and halves
-- the scale; growth_interval good steps in a row double it.

local SCALER = { init_scale = 65536.0, growth_factor = 2.0, backoff_factor = 0.5, growth_interval = 2000 }
emit_train.SCALER = SCALER   -- the CUDA program's device-side scaler uses the same

-- `norm`: clipping by norm, whose total the step keeps (grad_norm, logged as train/grad_norm)
-- `lr_of(step)`: the C of the step's learning rate
-- `sharded` (fsdp's SHARD_GRAD_OP): the unscale and the inf check run over this rank's
-- shard of the averaged gradients, and a step is skipped when any rank found one
-- (FULL_SHARD: the shard is fsdp_grad_shard()).
local function scaler_code(k16, enabled, norm, lr_of, sharded)
  local GR = sharded == "FULL_SHARD" and "gs[i - lo]" or "m->grads[i]"
  local function lr_line(step)
    local e, why = lr_of(step)
    return "            double lr = " .. e .. ";" .. (why and ("   // " .. why) or "")
  end
  local clip = norm and "grad_norm = clip_gradients(&m);" or "clip_gradients(&m);"
  local norm_var = norm and "            double grad_norm = NAN;   // the gradients' norm before clipping (a skipped step: NAN)" or nil
  local STATE16, OPT16, PAR_FOR, LD, ST, LDO, STO = k16.STATE16, k16.OPT16, k16.PAR_FOR, k16.LD, k16.ST, k16.LDO, k16.STO
  if not enabled then
    return {
      types = "", decls = "", code = "", fields = {}, alloc = {}, save = {}, load = {}, loop_vars = "", summary = "",
      backward = "            model_backward(&m, &batch, B, (real)1 / ACCUMULATE);",
      step = join {
        norm_var,
        "            " .. clip,
        lr_line("rs.step"),
        "            optimizer_step(&opt, &m, lr, momentum_at(rs.step, total_steps), rs.step);",
      },
    }
  end
  local S = SCALER
  local desc = string.format("GradScaler(init_scale=%s, growth_factor=%s, backoff_factor=%s, growth_interval=%d)",
    lit(S.init_scale), lit(S.growth_factor), lit(S.backoff_factor), S.growth_interval)
  local par = k16.parallel and (PAR_FOR .. " reduction(| : found_inf)") or PAR_FOR
  return {
    types = join {
      "",
      "// 16-mixed's dynamic loss scale: torch.cuda.amp.GradScaler's state",
      "typedef struct {",
      "    float scale;              // the backward starts from loss × scale (a float32 tensor in torch)",
      "    int64_t growth_tracker;   // good steps in a row since the scale last changed",
      "} GradScaler;",
      "",
    },
    decls = join {
      "",
      "// " .. desc .. ":",
      "void scaler_init(GradScaler *s);",
      "// unscale_: grads *= 1/scale; returns found_inf (1 when any gradient was inf or NaN)",
      "int scaler_unscale_and_check(const GradScaler *s, Model *m);",
      "// update(): after a skipped step (found_inf) scale *= backoff_factor; after",
      "// growth_interval good steps in a row scale *= growth_factor",
      "void scaler_update(GradScaler *s, int found_inf);",
    },
    code = join {
      "",
      "",
      "// 16-mixed: dynamic loss scaling, " .. desc,
      "// (Fabric's MixedPrecision(\"16-mixed\") creates it with these defaults).",
      string.format("#define SCALER_INIT_SCALE %sf", lit(S.init_scale)),
      string.format("#define SCALER_GROWTH_FACTOR %sf", lit(S.growth_factor)),
      string.format("#define SCALER_BACKOFF_FACTOR %sf", lit(S.backoff_factor)),
      string.format("#define SCALER_GROWTH_INTERVAL %d", S.growth_interval),
      "",
      "void scaler_init(GradScaler *s) {",
      "    s->scale = SCALER_INIT_SCALE;",
      "    s->growth_tracker = 0;",
      "}",
      "",
      "// GradScaler.unscale_ (_amp_foreach_non_finite_check_and_unscale_): every master",
      "// gradient times 1/scale, found_inf when one of them is inf or NaN",
      "int scaler_unscale_and_check(const GradScaler *s, Model *m) {",
      "    const real inv_scale = (real)(1.0 / (double)s->scale);   // scale.double().reciprocal().float()",
      "    int found_inf = 0;",
      sharded and "    const size_t lo = fsdp_lo(), hi = fsdp_hi();   // FSDP: this rank's shard of the averaged gradients" or nil,
      sharded == "FULL_SHARD" and "    state_t *gs = fsdp_grad_shard();   // FULL_SHARD: the shard is a buffer of its own\n    (void)m;" or nil,
      par,
      sharded and "    for (size_t i = lo; i < hi; i++) {" or "    for (size_t i = 0; i < NUM_PARAMS; i++) {",
      string.format("        real g = %s;", LD(GR)),
      "        found_inf |= !isfinite(g);",
      string.format("        %s = %s;", GR, ST("g * inv_scale")),
      "    }",
      sharded and "    return ddp_any(found_inf);   // FSDP: every rank skips the step when one shard had an inf" or "    return found_inf;",
      "}",
      "",
      "// GradScaler.update (_amp_update_scale_)",
      "void scaler_update(GradScaler *s, int found_inf) {",
      "    if (found_inf) {",
      "        s->scale *= SCALER_BACKOFF_FACTOR;",
      "        s->growth_tracker = 0;",
      "    } else if (++s->growth_tracker == SCALER_GROWTH_INTERVAL) {",
      "        float grown = s->scale * SCALER_GROWTH_FACTOR;",
      "        if (isfinite(grown)) s->scale = grown;   // never grows to inf",
      "        s->growth_tracker = 0;",
      "    }",
      "}",
    },
    fields = {
      "    int64_t steps;        // updates taken (torch's state['step']): skipped steps do not count",
      "    GradScaler scaler;    // 16-mixed's loss scale",
    },
    alloc = {
      "    o->steps = 0;",
      "    scaler_init(&o->scaler);",
    },
    save = {
      "    ckpt_writer_set_meta_i64(&w, \"optimizer.steps\", o->steps);",
      "    ckpt_writer_set_meta_f64(&w, \"scaler.scale\", o->scaler.scale);",
      "    ckpt_writer_set_meta_i64(&w, \"scaler.growth_tracker\", o->scaler.growth_tracker);",
    },
    load = {
      "    double scale = 0;",
      "    if (ckpt_meta_get_i64_in(&f, \"optimizer.steps\", 0, CKPT_MAX_COUNT, &o->steps) || ckpt_meta_get_f64(&f, \"scaler.scale\", &scale) ||",
      string.format("        ckpt_meta_get_i64_in(&f, \"scaler.growth_tracker\", 0, %d, &o->scaler.growth_tracker))", S.growth_interval),
      "        die(f.err);",
      "    if (!(scale > 0 && scale <= 3.4028234663852886e38)) { fprintf(stderr, \"%s: metadata 'scaler.scale' is %g, not a loss scale\\n\", path, scale); exit(1); }",
      "    o->scaler.scale = (float)scale;",
    },
    loop_vars = "    int64_t skipped = 0;   // steps the loss scaler skipped in this run\n",
    summary = "\n    if (skipped || !args.quiet) printf(\"loss scale %g; %lld steps skipped for inf/nan gradients\\n\", (double)opt.scaler.scale, (long long)skipped);",
    backward = join {
      "            // GradScaler.scale(loss): the backward starts from loss × scale",
      "            model_backward(&m, &batch, B, (real)opt.scaler.scale / ACCUMULATE);",
    },
    step = join {
      norm_var,
      "            // GradScaler: unscale; a step with inf/nan gradients is skipped (parameters,",
      "            // optimizer state, its step count and the schedule stay) and backs the scale off",
      lr_line("opt.steps"),
      "            int found_inf = scaler_unscale_and_check(&opt.scaler, &m);",
      "            if (!found_inf) {",
      "                " .. clip,
      "                optimizer_step(&opt, &m, lr, momentum_at(opt.steps, total_steps), opt.steps);",
      "                opt.steps++;",
      "            } else {",
      "                skipped++;",
      "            }",
      "            scaler_update(&opt.scaler, found_inf);",
    },
  }
end

---------------------------------------------------------------------------
-- callbacks and loggers

local MONITORS = { ["val/loss"] = "val_loss", ["val/acc"] = "val_acc", ["train/loss"] = "epoch_train_loss" }

local function monitor_var(cb, has_accuracy, metrics)
  for i, mt in ipairs(metrics) do   -- train.log's: the validation's value, or the epoch's
    if cb.args.monitor == "val/" .. mt.name then return string.format("(isnan(val_loss) ? NAN : metric_acc_get(&um_eval, %d))", i - 1) end
    if cb.args.monitor == "train/" .. mt.name .. "_epoch" then return string.format("um_epoch_value[%d]", i - 1) end
  end
  local v = MONITORS[cb.args.monitor]
  if not v or (cb.args.monitor == "val/acc" and not has_accuracy) then
    local names = { "val/loss", "train/loss" }
    if has_accuracy then names[#names + 1] = "val/acc" end
    diag.fatal(cb.where, string.format("%s: cannot monitor '%s'; this program logs %s%s", cb.kind, cb.args.monitor,
      table.concat(names, ", "), util.did_you_mean(cb.args.monitor, names)))
  end
  return v
end

local function callbacks_code(sp, has_accuracy, metrics)
  local lines, init, mkdirs = {}, {}, {}
  local counts = {}   -- per slot: 1 when it holds a count (epochs, steps), checked as one on resume
  local best_ckpt = nil   -- where the best checkpoint is tracked, for testing it
  local slot = 0
  local function take(initial, count)
    slot = slot + 1
    if slot > 32 then diag.fatal(sp.train.where, "too many callbacks (their state has 32 slots)") end
    init[#init + 1] = initial
    counts[slot] = count and "1" or "0"
    return slot - 1
  end
  local sched = sp.train.scheduler
  if sched and sched.kind == "ReduceLROnPlateau" then
    -- torch's ReduceLROnPlateau.step(metric) after each validation (Lightning's monitor);
    -- its state is run state, so a checkpoint holds it: slot 0 the lr (what the training
    -- step reads), 1 best, 2 num_bad_epochs, 3 cooldown_counter
    local a = sched.args
    local var = monitor_var(sched, has_accuracy, metrics)
    local lr, best, bad, cool = take(lit(sp.train.optimizer.args.lr)), take(a.mode == "min" and "INFINITY" or "-INFINITY"),
      take("0", true), take("0", true)
    assert(lr == 0)   -- the training step reads rs.cb[0]
    local better
    if a.threshold_mode == "rel" then
      better = string.format("%s %s next.cb[%d] * %s", var, a.mode == "min" and "<" or ">", best,
        lit(a.mode == "min" and 1 - a.threshold or a.threshold + 1))
    else
      better = string.format("%s %s next.cb[%d] %s %s", var, a.mode == "min" and "<" or ">", best, a.mode == "min" and "-" or "+", lit(a.threshold))
    end
    lines[#lines + 1] = string.format("        // ReduceLROnPlateau(monitor=%s, mode='%s', factor=%s, patience=%d, threshold=%s, threshold_mode='%s', cooldown=%d, min_lr=%s, eps=%s)  <- %s:%d",
      util.c_string(a.monitor), a.mode, lit(a.factor), a.patience, lit(a.threshold), a.threshold_mode, a.cooldown, lit(a.min_lr),
      lit(a.eps), util.c_comment(sched.where.file), sched.where.line)
    lines[#lines + 1] = string.format("        if (!isnan(%s)) {   // once per validation (each epoch for train/loss)", var)
    lines[#lines + 1] = string.format("            if (%s) { next.cb[%d] = %s; next.cb[%d] = 0; }", better, best, var, bad)
    lines[#lines + 1] = string.format("            else next.cb[%d] += 1;", bad)
    lines[#lines + 1] = string.format("            if (next.cb[%d] > 0) { next.cb[%d] -= 1; next.cb[%d] = 0; }   // in cooldown", cool, cool, bad)
    lines[#lines + 1] = string.format("            if (next.cb[%d] > %d) {", bad, a.patience)
    lines[#lines + 1] = string.format("                double old_lr = next.cb[%d], new_lr = fmax(old_lr * %s, %s);", lr, lit(a.factor), lit(a.min_lr))
    lines[#lines + 1] = string.format("                if (old_lr - new_lr > %s) {", lit(a.eps))
    lines[#lines + 1] = string.format("                    next.cb[%d] = new_lr;", lr)
    lines[#lines + 1] = string.format("                    if (!args.quiet) progress_print(&prog, \"ReduceLROnPlateau: %%s did not improve for %d validations: lr %%g\", %s, new_lr);",
      a.patience + 1, util.c_string(a.monitor))
    lines[#lines + 1] = "                }"
    lines[#lines + 1] = string.format("                next.cb[%d] = %d; next.cb[%d] = 0;", cool, a.cooldown, bad)
    lines[#lines + 1] = "            }"
    lines[#lines + 1] = "        }"
  end
  for _, cb in ipairs(sp.train.callbacks) do
    local a = cb.args
    if cb.kind == "EarlyStopping" then
      local var = monitor_var(cb, has_accuracy, metrics)
      local best = take(a.mode == "min" and "INFINITY" or "-INFINITY")
      local wait = take("0", true)
      local better = a.mode == "min" and string.format("%s < next.cb[%d] - %s", var, best, lit(a.min_delta))
        or string.format("%s > next.cb[%d] + %s", var, best, lit(a.min_delta))
      lines[#lines + 1] = string.format("        // EarlyStopping(monitor=%s, mode=\"%s\", patience=%d, min_delta=%s)  <- %s:%d",
        util.c_string(a.monitor), a.mode, a.patience, lit(a.min_delta), util.c_comment(cb.where.file), cb.where.line)
      lines[#lines + 1] = string.format("        if (!isnan(%s)) {", var)
      lines[#lines + 1] = string.format("            if (%s) { next.cb[%d] = %s; next.cb[%d] = 0; }", better, best, var, wait)
      lines[#lines + 1] = string.format("            else if (++next.cb[%d] >= %d) {", wait, a.patience)
      lines[#lines + 1] = string.format("                if (!args.quiet) progress_print(&prog, \"early stopping: %%s did not improve for %d epochs (best %%.4f)\", %s, next.cb[%d]);",
        a.patience, util.c_string(a.monitor), best)
      lines[#lines + 1] = "                stop = 1;"
      lines[#lines + 1] = "            }"
      lines[#lines + 1] = "        }"
    elseif cb.kind == "ModelCheckpoint" then
      local dir = a.dirpath and util.c_string(a.dirpath) or "args.out"
      lines[#lines + 1] = string.format("        // ModelCheckpoint(monitor=%s, mode=\"%s\", save_top_k=%d, save_last=%s)  <- %s:%d",
        a.monitor and util.c_string(a.monitor) or "None", a.mode, a.save_top_k, tostring(a.save_last), util.c_comment(cb.where.file), cb.where.line)
      if a.save_top_k < 0 then
        -- every epoch's checkpoint is kept
        lines[#lines + 1] = string.format("        snprintf(path, sizeof path, \"%%s/epoch=%%lld-step=%%lld.safetensors\", %s, (long long)rs.epoch, (long long)rs.step);", dir)
        lines[#lines + 1] = "        save_checkpoint(path, &m, &opt, &next, &ls);"
      elseif a.save_top_k > 0 then
        local k = a.save_top_k
        if k > 8 then diag.fatal(cb.where, "ModelCheckpoint: save_top_k is at most 8 here (or -1 for all)") end
        if not a.monitor and k > 1 then
          diag.fatal(cb.where, "ModelCheckpoint: save_top_k > 1 needs a monitor (as in Lightning)")
        end
        -- without a monitor, the latest checkpoint is the best (Lightning keeps the last one)
        local var = a.monitor and monitor_var(cb, has_accuracy, metrics) or "(double)rs.step"
        local maximize = (not a.monitor) or a.mode == "max"
        local base = take("0")   -- k × (value, epoch, step)
        for i = 2, 3 * k do take("0", i % 3 ~= 1) end
        -- the slots start as "empty" (epoch -1)
        for i = 0, k - 1 do init[base + 3 * i + 2] = "-1" end
        local better = maximize and ">" or "<"
        if a.monitor and not best_ckpt then best_ckpt = { base = base, k = k, better = better, dir = dir, monitor = a.monitor } end
        lines[#lines + 1] = "        {"
        lines[#lines + 1] = string.format("            double *top = &next.cb[%d];   // %d × (value, epoch, step); epoch < 0: an empty slot", base, k)
        lines[#lines + 1] = string.format("            double value = %s;", var)
        lines[#lines + 1] = "            int slot = -1;   // an empty slot, else the worst kept checkpoint"
        lines[#lines + 1] = string.format("            for (int i = 0; i < %d && !isnan(value); i++) {", k)
        lines[#lines + 1] = "                if (top[3 * i + 1] < 0) { slot = i; break; }"
        lines[#lines + 1] = string.format("                if (slot < 0 || top[3 * slot] %s top[3 * i]) slot = i;", better)
        lines[#lines + 1] = "            }"
        lines[#lines + 1] = string.format("            if (slot >= 0 && (top[3 * slot + 1] < 0 || value %s top[3 * slot])) {", better)
        lines[#lines + 1] = "                if (top[3 * slot + 1] >= 0) {"
        lines[#lines + 1] = string.format("                    snprintf(path, sizeof path, \"%%s/epoch=%%lld-step=%%lld.safetensors\", %s, (long long)top[3 * slot + 1], (long long)top[3 * slot + 2]);", dir)
        lines[#lines + 1] = "                    ckpt_pending_add(&stale, path);   // deleted once last.safetensors no longer names it"
        lines[#lines + 1] = "                }"
        lines[#lines + 1] = "                top[3 * slot] = value; top[3 * slot + 1] = (double)rs.epoch; top[3 * slot + 2] = (double)rs.step;"
        lines[#lines + 1] = string.format("                snprintf(path, sizeof path, \"%%s/epoch=%%lld-step=%%lld.safetensors\", %s, (long long)rs.epoch, (long long)rs.step);", dir)
        lines[#lines + 1] = "                save_checkpoint(path, &m, &opt, &next, &ls);"
        lines[#lines + 1] = "            }"
        lines[#lines + 1] = "        }"
      end
      if a.dirpath then
        mkdirs[#mkdirs + 1] = a.dirpath
      end
      if a.save_last then
        lines[#lines + 1] = "        // save_last: last.safetensors is written after every epoch below"
      end
    end
  end
  while slot < 32 do init[#init + 1] = "0"; slot = slot + 1 end
  if #lines == 0 then lines[1] = "        (void)val_acc;" end
  local mk = {}
  for _, d in ipairs(mkdirs) do
    mk[#mk + 1] = string.format("    if (mkdir(%s, 0777) && errno != EEXIST) { fprintf(stderr, \"%%s: %%s\\n\", %s, strerror(errno)); return 1; }",
      util.c_string(d), util.c_string(d))
  end
  local test_desc, test_weights = "", "        // (the final weights)"
  if best_ckpt then
    -- Lightning's trainer.test(ckpt_path="best"): test the best checkpoint by the monitor
    local b = best_ckpt
    test_desc = string.format(": the best checkpoint by %s, as Lightning's trainer.test(ckpt_path=\"best\")", b.monitor)
    test_weights = join {
      "        int best = -1;",
      string.format("        for (int i = 0; i < %d; i++)", b.k),
      string.format("            if (rs.cb[%d + 3 * i + 1] >= 0 && (best < 0 || rs.cb[%d + 3 * i] %s rs.cb[%d + 3 * best])) best = i;", b.base, b.base, b.better, b.base),
      "        if (best >= 0) {",
      string.format("            snprintf(path, sizeof path, \"%%s/epoch=%%lld-step=%%lld.safetensors\", %s, (long long)rs.cb[%d + 3 * best + 1], (long long)rs.cb[%d + 3 * best + 2]);", b.dir == "args.out" and "args.out" or b.dir, b.base, b.base),
      "            load_weights(path, &m);",
      "            if (!args.quiet) printf(\"testing %s\\n\", path);",
      "        }",
    }
  end
  while #counts < 32 do counts[#counts + 1] = "0" end
  return join(lines), table.concat(init, ", "), #mk > 0 and join(mk) or "    // (checkpoints go to --out)", test_desc, test_weights,
    "{ " .. table.concat(counts, ", ") .. " }", best_ckpt
end

-- The run's loggers (runtime/runlog.h hands each row to all of them).  With none in
-- the spec, a CSVLogger writes OUT/logs/lightning_logs/version_N/metrics.csv, as README
-- says.  Rows: the step's (train/loss, lr-<optimizer>, train/throughput, scale under
-- loss scaling, train/grad_norm when clipping by norm) every N steps and at the run's last step; the epoch's (train/loss_epoch,
-- the validation metrics) one row; the test's one row.  Returns the template values.
local DEFAULT_LOGGER = { kind = "CSVLogger", args = { root_dir = "logs", name = "lightning_logs", flush_logs_every_n_steps = 100 } }

local function gcd(a, b) while b ~= 0 do a, b = b, a % b end return a end

-- `lr_columns`: the parameter groups' lr columns ({ key, value }, C), after lr-<Optimizer>; `metrics`: train.log's (g.loss.metrics)
-- `ranks`: "ddp", "ddp_step" (a training_step's ddp: no bucket carries the stop request) or "fsdp" (else false), whose
-- logged values are reduced over the ranks (every rank computes them);
-- `on_device`: the CUDA program, which adds train.log's values up on the device (gen/emit_cuda.lua)
-- and reads the sums back into metric_acc
local function logger_code(sp, has_accuracy, loss_scaling, hk, grad_norm, best, lr_columns, metrics, ranks, on_device)
  local loggers = sp.train.loggers
  if #loggers == 0 then loggers = { DEFAULT_LOGGER } end
  local globals, open, close_extra, ckpt_meta = {}, {}, {}, {}
  local every_all = 0
  local count = { CSVLogger = 0, TensorBoardLogger = 0, MLFlowLogger = 0 }
  local has_mlflow = false
  globals[#globals + 1] = "static runlog run_log;   // every logger below; rows go to all of them"
  globals[#globals + 1] = "// dir as given when absolute, else under --out"
  globals[#globals + 1] = "static void under_out(char *buf, size_t len, const char *out, const char *dir) {"
  globals[#globals + 1] = "    if (dir[0] == '/') snprintf(buf, len, \"%s\", dir);"
  globals[#globals + 1] = "    else snprintf(buf, len, \"%s/%s\", out, dir);"
  globals[#globals + 1] = "}"
  open[#open + 1] = "    runlog_init(&run_log, LOG_FLUSH_SECONDS);"
  open[#open + 1] = "    char log_dir[4096];"
  for _, lg in ipairs(loggers) do
    local a = lg.args
    local every = a.every_n_steps or sp.train.log_every_n_steps
    every_all = gcd(every_all, every)
    local i = count[lg.kind]
    count[lg.kind] = i + 1
    local where = lg.where and string.format("  <- %s:%d", util.c_comment(lg.where.file), lg.where.line) or "  (the default: no loggers in the spec)"
    if lg.kind == "CSVLogger" then
      local var = "log_csv" .. i
      globals[#globals + 1] = string.format("static csvlog %s;", var)
      open[#open + 1] = string.format("    // CSVLogger(root_dir=%s, name=%s): metrics.csv and hparams.yaml in Lightning's layout%s",
        util.c_comment(a.root_dir), util.c_comment(a.name), where)
      open[#open + 1] = string.format("    under_out(log_dir, sizeof log_dir, args.out, %s);", util.c_string(a.root_dir))
      open[#open + 1] = string.format("    if (csvlog_open(&%s, log_dir, %s, %d, %d)) die(%s.err);", var, util.c_string(a.name), a.version or -1,
        a.flush_logs_every_n_steps, var)
      open[#open + 1] = string.format("    if (runlog_add_csv(&run_log, &%s, %d)) die(run_log.err);", var, every)
    elseif lg.kind == "TensorBoardLogger" then
      local var = "log_tb" .. i
      globals[#globals + 1] = string.format("static tblog %s;", var)
      open[#open + 1] = string.format("    // TensorBoardLogger(root_dir=%s, name=%s): events.out.tfevents.*%s",
        util.c_comment(a.root_dir), util.c_comment(a.name), where)
      open[#open + 1] = string.format("    under_out(log_dir, sizeof log_dir, args.out, %s);", util.c_string(a.root_dir))
      open[#open + 1] = "    {"
      open[#open + 1] = "        char dir[4300], err[CSVLOG_ERR_LEN];"
      open[#open + 1] = string.format("        if (csvlog_version_dir(log_dir, %s, %d, dir, sizeof dir, err) < 0) die(err);", util.c_string(a.name), a.version or -1)
      open[#open + 1] = string.format("        if (tblog_open(&%s, dir, runlog_wall_time())) die(%s.err);", var, var)
      open[#open + 1] = "    }"
      open[#open + 1] = string.format("    if (runlog_add_tb(&run_log, &%s, %d)) die(run_log.err);", var, every)
    elseif lg.kind == "MLFlowLogger" then
      has_mlflow = true
      local var = "log_mlflow" .. i
      local store = require("spec").mlflow_store(a)
      globals[#globals + 1] = string.format("static mlflowlog %s;", var)
      if store.db then
        open[#open + 1] = string.format("    // MLFlowLogger(experiment_name=%s, tracking_uri=%s): MLflow's SQL store, artifacts in %s%s",
          util.c_comment(a.experiment_name), util.c_comment(a.tracking_uri), util.c_comment(store.dir), where)
        open[#open + 1] = "    char db_path[4096];"
        open[#open + 1] = string.format("    under_out(db_path, sizeof db_path, args.out, %s);", util.c_string(store.db))
      else
        open[#open + 1] = string.format("    // MLFlowLogger(experiment_name=%s, store %s): an mlruns/ file store%s",
          util.c_comment(a.experiment_name), util.c_comment(store.dir), where)
      end
      open[#open + 1] = string.format("    under_out(log_dir, sizeof log_dir, args.out, %s);", util.c_string(store.dir))
      open[#open + 1] = "    {"
      if a.run_id then
        open[#open + 1] = string.format("        const char *run_id = %s;   // the spec's run_id: continue that run", util.c_string(a.run_id))
        open[#open + 1] = "        char saved_id[64];"
        open[#open + 1] = "        (void)saved_id;"
      else
        open[#open + 1] = "        char saved_id[64] = \"\";   // a resumed run continues the run its checkpoint names"
        open[#open + 1] = string.format("        if (args.resume) resumed_meta(args.resume, \"mlflow.run_id.%d\", saved_id, sizeof saved_id);", i)
        open[#open + 1] = "        const char *run_id = saved_id;"
      end
      open[#open + 1] = string.format("        if (%s(&%s, %s%s, %s, run_id, args.resume ? rs.step : -1, (int64_t)(runlog_wall_time() * 1000))) die(%s.err);",
        store.db and "mlflowlog_open_sqlite" or "mlflowlog_open", var, store.db and "db_path, " or "", "log_dir, " .. util.c_string(a.experiment_name),
        a.run_name and util.c_string(a.run_name) or "NULL", var)
      open[#open + 1] = "    }"
      local tags = { { "mlflow.source.name", util.c_string(sp.file) }, { "mlflow.source.type", util.c_string("LOCAL") },
                     { "loom.spec_hash", "MODEL_SPEC_HASH" }, { "loom.precision", "MODEL_PRECISION" }, { "loom.model", "MODEL_NAME" } }
      for _, k in ipairs(util.sorted_keys(a.tags)) do tags[#tags + 1] = { k, util.c_string(a.tags[k]) } end
      for _, t in ipairs(tags) do
        open[#open + 1] = string.format("    if (mlflowlog_tag(&%s, %s, %s)) die(%s.err);", var, util.c_string(t[1]), t[2], var)
      end
      open[#open + 1] = "    {   // mlflow.source.git.commit: the commit of the spec directory's repository, as MLflow tags a script's"
      open[#open + 1] = "        char commit[48];"
      open[#open + 1] = string.format("        if (mlflowlog_git_commit(%s, commit, sizeof commit) == 0 && mlflowlog_tag(&%s, \"mlflow.source.git.commit\", commit)) die(%s.err);",
        util.c_string(sp.file:match("^(.*)/[^/]*$") or "."), var, var)
      open[#open + 1] = "    }"
      open[#open + 1] = string.format("    if (runlog_add_mlflow(&run_log, &%s, %d)) die(run_log.err);", var, every)
      ckpt_meta[#ckpt_meta + 1] = string.format("    if (%s.run_dir) ckpt_writer_set_meta(&w, \"mlflow.run_id.%d\", %s.run_id);", var, i, var)
      if a.log_model then
        close_extra[#close_extra + 1] = "    // log_model: the final checkpoint as an artifact"
        close_extra[#close_extra + 1] = "    snprintf(path, sizeof path, \"%s/last.safetensors\", args.out);"
        close_extra[#close_extra + 1] = string.format("    if (access(path, F_OK) == 0 && mlflowlog_artifact(&%s, path, \"checkpoints/last.safetensors\")) die(%s.err);", var, var)
        if best then
          for _, line in ipairs {
            string.format("    {   // and ModelCheckpoint's kept checkpoints; the best by %s tagged loom.best_checkpoint", util.c_comment(best.monitor)),
            "        int best = -1;",
            "        char name[128];",
            string.format("        for (int i = 0; i < %d; i++) {", best.k),
            string.format("            const double *top = &rs.cb[%d + 3 * i];   // (value, epoch, step); epoch < 0: an empty slot", best.base),
            "            if (top[1] < 0) continue;",
            string.format("            if (best < 0 || top[0] %s rs.cb[%d + 3 * best]) best = i;", best.better, best.base),
            string.format("            snprintf(path, sizeof path, \"%%s/epoch=%%lld-step=%%lld.safetensors\", %s, (long long)top[1], (long long)top[2]);", best.dir),
            "            snprintf(name, sizeof name, \"checkpoints/epoch=%lld-step=%lld.safetensors\", (long long)top[1], (long long)top[2]);",
            string.format("            if (access(path, F_OK) == 0 && mlflowlog_artifact(&%s, path, name)) die(%s.err);", var, var),
            "        }",
            "        if (best >= 0) {",
            string.format("            snprintf(name, sizeof name, \"checkpoints/epoch=%%lld-step=%%lld.safetensors\", (long long)rs.cb[%d + 3 * best + 1], (long long)rs.cb[%d + 3 * best + 2]);", best.base, best.base),
            string.format("            if (mlflowlog_tag(&%s, \"loom.best_checkpoint\", name)) die(%s.err);", var, var),
            "        }",
            "    }",
          } do close_extra[#close_extra + 1] = line end
        end
      end
    end
  end
  if has_mlflow then
    globals[#globals + 1] = "// a checkpoint's metadata value (\"\" when it has none): the MLflow run a resumed run continues"
    globals[#globals + 1] = "static void resumed_meta(const char *ckpt, const char *key, char *out, size_t len) {"
    globals[#globals + 1] = "    ckpt_file f;"
    globals[#globals + 1] = "    if (ckpt_open(&f, ckpt)) die(f.err);"
    globals[#globals + 1] = "    const char *v = ckpt_meta_get(&f, key);"
    globals[#globals + 1] = "    snprintf(out, len, \"%s\", v ? v : \"\");"
    globals[#globals + 1] = "    ckpt_close(&f);"
    globals[#globals + 1] = "}"
  end
  -- hyperparameters, once
  local hp = {
    "    if (runlog_hparam_str(&run_log, \"model\", MODEL_NAME) || runlog_hparam_str(&run_log, \"precision\", MODEL_PRECISION) ||",
    "        runlog_hparam_i64(&run_log, \"batch_size\", BATCH_MAX) || runlog_hparam_i64(&run_log, \"accumulate\", ACCUMULATE) ||",
    "        runlog_hparam_i64(&run_log, \"seed\", (int64_t)args.seed) || runlog_hparam_i64(&run_log, \"epochs\", args.epochs) ||",
    "        runlog_hparam_i64(&run_log, \"max_steps\", args.max_steps) ||",
    string.format("        runlog_hparam_str(&run_log, \"optimizer\", %s) || runlog_hparam_f64(&run_log, \"lr\", %s))",
      util.c_string(sp.train.optimizer.kind), lit(sp.train.optimizer.args.lr)),
    "        die(run_log.err);",
    "    double log_t = now_seconds();   // train/throughput: items per second since the last step row",
    "    int64_t log_items = 0;",
  }
  for _, l in ipairs(hp) do open[#open + 1] = l end
  if #metrics > 0 then
    -- train.log's metrics: model_user_metrics' values, reduced as log_reduce says
    local add = {
      "static double max_nan(double a, double v) { return isnan(a) ? a : (v > a || isnan(v)) ? v : a; }",
      "// v: one batch's values (a mean over it for USER_METRIC_MEAN, weighted by B)",
      "static void metric_acc_add(metric_acc *a, const double *v, int B) {",
      "    for (int i = 0; i < NUM_USER_METRICS; i++) {",
      "        switch (model_user_metric_reduce[i]) {",
      "        case USER_METRIC_MEAN: a->value[i] += v[i] * B; break;",
      "        case USER_METRIC_SUM: a->value[i] += v[i]; break;",
      "        default: a->value[i] = max_nan(a->value[i], v[i]); break;",
      "        }",
      "    }",
      "    a->weight += B;",
      "}",
    }
    -- the device adds them up (model.cu: user_metrics_ops); max_nan combines the ranks' maxima
    if on_device then add = ranks and { add[1] } or {} end
    for _, line in ipairs {
      on_device and "// train.log's metrics (model.h), summed on the device and read back here, reduced over batches"
        or "// train.log's metrics (model.h: model_user_metrics), reduced over batches as log_reduce says:",
      on_device and "// as log_reduce says: mean (weighted by the batch's size), sum or max (a NaN wins, as torch.max)"
        or "// mean (weighted by the batch's size), sum or max (a NaN wins, as torch.max)",
      "typedef struct { double value[NUM_USER_METRICS]; double weight; } metric_acc;",
      "static metric_acc um_step, um_epoch, um_eval;   // this step's micro-batches, this epoch's, the last evaluation's",
      "static double um_epoch_value[NUM_USER_METRICS];   // the epoch's values, for the callbacks (NAN: no batch)",
      "static void metric_acc_clear(metric_acc *a) {",
      "    for (int i = 0; i < NUM_USER_METRICS; i++) a->value[i] = model_user_metric_reduce[i] == USER_METRIC_MAX ? -INFINITY : 0;",
      "    a->weight = 0;",
      "}",
    } do globals[#globals + 1] = line end
    for _, line in ipairs(add) do globals[#globals + 1] = line end
    for _, line in ipairs {
      "static double metric_acc_get(const metric_acc *a, int i) {",
      "    if (a->weight == 0) return NAN;",
      "    return model_user_metric_reduce[i] == USER_METRIC_MEAN ? a->value[i] / a->weight : a->value[i];",
      "}",
    } do globals[#globals + 1] = line end
    open[#open + 1] = "    metric_acc_clear(&um_step);"
    open[#open + 1] = "    metric_acc_clear(&um_epoch);"
  end
  if ranks then
    -- every rank's values gathered in rank order and combined alike on every rank, so that
    -- rank 0 logs the global values and every rank's callbacks decide the same
    local n = #metrics > 0 and "NUM_USER_METRICS + 2" or "1"
    for _, line in ipairs {
      "// DDP/FSDP: the logged values over every rank (ddp_gather: rank by rank; every rank",
      "// combines them in the same order, so its callbacks see the same values as rank 0's logs)",
      "static double *ranks_values;   // ddp_world() rows",
      string.format("static const double *gather_over_ranks(const double *mine, int n) {   // n <= %s", n),
      string.format("    if (!ranks_values && !(ranks_values = malloc(sizeof(double) * (size_t)ddp_world() * (%s)))) die(\"out of memory\");", n),
      "    ddp_gather(mine, n, ranks_values);",
      "    return ranks_values;",
      "}",
    } do globals[#globals + 1] = line end
    if #metrics > 0 then
      for _, line in ipairs {
        "// a's sums, counts and maxima over every rank; with loss: the mean of every rank's *loss",
        "// (a step's micro-batches are equally large on every rank: DistributedSampler pads the shards)",
        "static void metric_acc_over_ranks(metric_acc *a, double *loss) {",
        "    double mine[NUM_USER_METRICS + 2];",
        "    memcpy(mine, a->value, sizeof a->value);",
        "    mine[NUM_USER_METRICS] = a->weight;",
        "    mine[NUM_USER_METRICS + 1] = loss ? *loss : 0;",
        "    const double *all = gather_over_ranks(mine, NUM_USER_METRICS + 2);",
        "    metric_acc_clear(a);",
        "    double sum = 0;",
        "    for (int r = 0; r < ddp_world(); r++) {",
        "        const double *x = all + (size_t)r * (NUM_USER_METRICS + 2);",
        "        for (int i = 0; i < NUM_USER_METRICS; i++)",
        "            a->value[i] = model_user_metric_reduce[i] == USER_METRIC_MAX ? max_nan(a->value[i], x[i]) : a->value[i] + x[i];",
        "        a->weight += x[NUM_USER_METRICS];",
        "        sum += x[NUM_USER_METRICS + 1];",
        "    }",
        "    if (loss) *loss = sum / ddp_world();",
        "}",
        "// the epoch's mean training loss (the mean of every rank's) and train.log's values over",
        "// every rank's batches",
        "static double epoch_over_ranks(double loss) {",
        "    metric_acc_over_ranks(&um_epoch, &loss);",
        "    return loss;",
        "}",
      } do globals[#globals + 1] = line end
    else
      for _, line in ipairs {
        "// the mean of every rank's loss (a step's micro-batches, and an epoch's steps, are as many",
        "// on every rank: DistributedSampler pads the shards)",
        "static double loss_over_ranks(double loss) {",
        "    const double *all = gather_over_ranks(&loss, 1);",
        "    double sum = 0;",
        "    for (int r = 0; r < ddp_world(); r++) sum += all[r];",
        "    return sum / ddp_world();",
        "}",
        "static double epoch_over_ranks(double loss) { return loss_over_ranks(loss); }",
      } do globals[#globals + 1] = line end
    end
    -- the step's loss over the ranks: a collective, so only on the steps that show it
    for _, line in ipairs {
      "// a step's training loss (the mean of every rank's) and train.log's values over every",
      "// rank's batches, gathered only where a step row, a progress line or a hook shows them",
      "// (`shown`: alike on every rank) and at the run's first step; between those steps, the last",
      "// gathered loss (what a terminal's progress bar shows)",
      "static double step_over_ranks(double loss, int shown) {",
      "    static double gathered = NAN;",
      "    static int once = 0;",
      "    if (!shown && once) return gathered;",
      "    once = 1;",
      #metrics > 0 and "    metric_acc_over_ranks(&um_step, &loss);" or "    loss = loss_over_ranks(loss);",
      "    return gathered = loss;",
      "}",
    } do globals[#globals + 1] = line end
  end
  local step_keys = { "\"train/loss\"", util.c_string("lr-" .. sp.train.optimizer.kind), "\"train/throughput\"" }
  local step_vals = { "mean_loss", "lr", "(double)log_items / (t - log_t)" }
  for i, c in ipairs(lr_columns) do table.insert(step_keys, 2 + i, c.key); table.insert(step_vals, 2 + i, c.value) end
  if loss_scaling then step_keys[#step_keys + 1] = "\"scale\""; step_vals[#step_vals + 1] = "opt.scaler.scale" end
  if grad_norm then step_keys[#step_keys + 1] = "\"train/grad_norm\""; step_vals[#step_vals + 1] = "grad_norm" end
  for i, mt in ipairs(metrics) do
    step_keys[#step_keys + 1] = util.c_string("train/" .. mt.name)
    step_vals[#step_vals + 1] = string.format("metric_acc_get(&um_step, %d)", i - 1)
  end
  local step = join {
    ranks and "            log_items += (int64_t)B * ACCUMULATE * ddp_world();   // every rank's items"
      or "            log_items += (int64_t)B * ACCUMULATE;",
    "            {   // the step's row: every N steps, and always the run's last step",
    string.format("                int last = rs.step >= total_steps || %s;", ranks and "stop_requested" or "signals_stop_requested()"),
    string.format("                if (last || rs.step %% %d == 0) {", every_all),
    "                    double t = now_seconds();",
    string.format("                    const char *keys[] = { %s };", table.concat(step_keys, ", ")),
    string.format("                    double values[] = { %s };", table.concat(step_vals, ", ")),
    string.format("                    if (runlog_step(&run_log, rs.step, rs.epoch, keys, values, %d, last)) die(run_log.err);", #step_keys),
    "                    log_t = t; log_items = 0;",
    "                }",
    "            }",
    #metrics > 0 and "            metric_acc_clear(&um_step);   // the next step's micro-batches" or nil,
  }
  if hk.step ~= "" then step = step .. "\n" .. hk.step end
  local epoch = {
    "        {   // the epoch's row: its mean training loss and every validation metric",
    string.format("            const char *keys[%d];", 3 + 2 * #metrics),
    string.format("            double values[%d];", 3 + 2 * #metrics),
    "            int n = 0;",
    "            if (!isnan(epoch_train_loss)) { keys[n] = \"train/loss_epoch\"; values[n++] = epoch_train_loss; }",
    "            if (!isnan(val_loss)) { keys[n] = \"val/loss\"; values[n++] = val_loss; }",
  }
  if has_accuracy then epoch[#epoch + 1] = "            if (!isnan(val_acc)) { keys[n] = \"val/acc\"; values[n++] = val_acc; }" end
  for i, mt in ipairs(metrics) do
    epoch[#epoch + 1] = string.format("            if (um_epoch.weight > 0) { keys[n] = %s; values[n++] = metric_acc_get(&um_epoch, %d); }",
      util.c_string("train/" .. mt.name .. "_epoch"), i - 1)
  end
  for i, mt in ipairs(metrics) do
    epoch[#epoch + 1] = string.format("            if (!isnan(val_loss)) { keys[n] = %s; values[n++] = metric_acc_get(&um_eval, %d); }",
      util.c_string("val/" .. mt.name), i - 1)
  end
  epoch[#epoch + 1] = "            if (n && runlog_epoch(&run_log, rs.step, rs.epoch, keys, values, n)) die(run_log.err);"
  if hk.epoch ~= "" then epoch[#epoch + 1] = hk.epoch end
  if #metrics > 0 then
    epoch[#epoch + 1] = "            for (int i = 0; i < NUM_USER_METRICS; i++) um_epoch_value[i] = metric_acc_get(&um_epoch, i);"
    epoch[#epoch + 1] = "            metric_acc_clear(&um_epoch);   // the next epoch's batches"
  end
  epoch[#epoch + 1] = "        }"
  local test_keys, test_vals = { "\"test/loss\"" }, { "test_loss" }
  if has_accuracy then test_keys[2] = "\"test/acc\""; test_vals[2] = "test_acc" end
  for i, mt in ipairs(metrics) do
    test_keys[#test_keys + 1] = util.c_string("test/" .. mt.name)
    test_vals[#test_vals + 1] = string.format("metric_acc_get(&um_eval, %d)", i - 1)
  end
  local test = {
    "        {",
    string.format("            const char *keys[] = { %s };", table.concat(test_keys, ", ")),
    string.format("            double values[] = { %s };", table.concat(test_vals, ", ")),
    string.format("            if (runlog_epoch(&run_log, rs.step, rs.epoch, keys, values, %d)) die(run_log.err);", #test_keys),
    "        }",
  }
  if hk.close ~= "" then close_extra[#close_extra + 1] = hk.close end
  close_extra[#close_extra + 1] = "    // MLflow's status: a run stopped by a signal was KILLED (it resumes from its checkpoint)"
  close_extra[#close_extra + 1] = "    if (runlog_close(&run_log, stop == 2 ? MLFLOW_KILLED : MLFLOW_FINISHED)) die(run_log.err);"
  if hk.globals ~= "" then globals[#globals + 1] = hk.globals end
  if hk.open ~= "" then open[#open + 1] = hk.open end
  -- DDP/FSDP: the micro-batch's slot after the step (gen/emit_c.lua's rank_blocks): the stop
  -- request agreed on, then the step's loss over the ranks where a step row (every
  -- every_all steps, the run's last), a progress line (every LOG_EVERY steps of an epoch,
  -- its last) or on_train_batch_end (every step) shows it
  local ranks_step = ranks and join {
    "            // DDP/FSDP: a stop request (a signal) is every rank's as soon as one rank has it; the",
    "            // step's loss (and train.log's values) over every rank where it is shown",
    on_device and "            int stop_requested = ddp_nccl_stop_requested();   // agreed on in the gradients' all-reduce (runtime/ddp_nccl.h)"
      or ranks == "ddp" and "            int stop_requested = ddp_stop_requested();   // agreed on in the gradients' all-reduce (runtime/ddp.h)"
      or "            int stop_requested = ddp_any(signals_stop_requested());",
    hk.step ~= "" and "            mean_loss = step_over_ranks(mean_loss, 1);   // on_train_batch_end reads it every step"
      or every_all == 1 and "            mean_loss = step_over_ranks(mean_loss, 1);   // every step's row is logged"
      or string.format("            mean_loss = step_over_ranks(mean_loss, stop_requested || rs.step >= total_steps || rs.step %% %d == 0 ||\n" ..
        "                                                   (db.index / ACCUMULATE + 1) %% LOG_EVERY == 0 || db.index + 1 >= batches_per_epoch);", every_all),
  } .. "\n" or nil
  return {
    ranks_step = ranks_step,
    epoch_train_loss = ranks and "epoch_loss_count ? epoch_over_ranks(epoch_loss_sum / epoch_loss_count) : NAN"
      or "epoch_loss_count ? epoch_loss_sum / epoch_loss_count : NAN",
    logger_globals = join(globals), logger_open = join(open), log_step = step, log_epoch = join(epoch),
    log_test = join(test), logger_close = join(close_extra),
    checkpoint_logs = join {
      "    // the logs on disk cover what the checkpoint does: a run killed after it and resumed",
      "    // from it loses no row",
      "    if (runlog_flush(&run_log)) die(run_log.err);",
      #ckpt_meta > 0 and join(ckpt_meta) or "    // (no MLflow run to remember)",
      hk.save ~= "" and hk.save or nil },
    every = every_all,
  }
end

-- The user's hooks (spec `hooks = Hooks { source = ..., on_... = "fn" }`): the
-- prototypes, call_hook (which fills runtime/loom_hooks.h's loom_hook_info), the calls
-- at each point, and the user's file to compile in.  `on_device`: the parameters live on
-- the device (or in FULL_SHARD's shards), so only on_save_checkpoint (after its copy to
-- the host, or its gather on rank 0) sees them.
local function spec_points() return require("spec").HOOK_POINTS end

local function hooks_code(sp, on_device, state_desc, state_dtype, has_accuracy)
  local h = sp.train.hooks
  local none = { globals = "", open = "", step = "", epoch = "", save = "", close = "", files = {} }
  if not h then return none end
  local a = h.args
  local with_params = on_device and "0" or "1"
  local g = {
    "",
    string.format("// the user's hooks: Hooks { source = %s }  <- %s:%d", util.c_comment(a.source), util.c_comment(h.where.file), h.where.line),
    "#include \"loom_hooks.h\"",
  }
  for _, point in ipairs(spec_points()) do
    if a[point] then g[#g + 1] = string.format("void %s(const loom_hook_info *info);   // %s", a[point], point) end
  end
  local more = {
    "static const char *hook_out_dir;",
    "static loom_param_view hook_params[NUM_PARAM_TENSORS + 1];",
    "static void call_hook(loom_hook fn, const char *point, const Model *m, int with_params, int64_t step, int64_t epoch,",
    "                      const char *const *names, const double *values, int n, const char *checkpoint) {",
    "    loom_hook_info info = { point, step, epoch, n, names, values, checkpoint, hook_out_dir, 0, NULL };",
    "    if (with_params) {",
    string.format("        size_t esize = (size_t)ckpt_dtype_size(%s);", state_dtype),
    "        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {",
    "            const tensor_info *t = &model_param_info[i];",
    string.format("            hook_params[i] = (loom_param_view){ t->name, %s, t->ndim, t->shape, (int64_t)t->numel,", util.c_string(state_desc)),
    "                                                (const char *)m->params + t->offset * esize };",
    "        }",
    "        info.nparams = NUM_PARAM_TENSORS; info.params = hook_params;",
    "    }",
    "    fn(&info);",
    "}",
  }
  for _, l in ipairs(more) do g[#g + 1] = l end
  local out = { globals = join(g), open = "    hook_out_dir = args.out;", step = "", epoch = "", save = "", close = "", files = {} }
  if a.on_train_batch_end then
    out.step = join {
      "            {",
      string.format("                const char *names[] = { \"train/loss\", %s };", util.c_string("lr-" .. sp.train.optimizer.kind)),
      "                double values[] = { mean_loss, lr };",
      string.format("                call_hook(%s, \"on_train_batch_end\", &m, %s, rs.step, rs.epoch, names, values, 2, NULL);", a.on_train_batch_end, with_params),
      "            }",
    }
  end
  if a.on_validation_end then
    out.epoch = join {
      "            if (val_loader && ((rs.epoch + 1) % VAL_EVERY == 0 || stop || rs.epoch + 1 == max_epochs))   // a validation ran",
      string.format("                call_hook(%s, \"on_validation_end\", &m, %s, rs.step, rs.epoch, keys, values, n, NULL);", a.on_validation_end, with_params),
    }
  end
  if a.on_save_checkpoint then
    out.save = string.format("    call_hook(%s, \"on_save_checkpoint\", m, 1, rs->step, rs->epoch, NULL, NULL, 0, path);", a.on_save_checkpoint)
  end
  if a.on_train_end then
    out.close = string.format("    call_hook(%s, \"on_train_end\", &m, %s, rs.step, rs.epoch, NULL, NULL, 0, NULL);", a.on_train_end, with_params)
  end
  out.files["user_" .. a.source:match("([^/]+)$")] = a.text
  return out
end

---------------------------------------------------------------------------

-- The values of the training loop's templates for the lowered table `l`
-- (gen/pipeline.lua): { train = templates/loop/train.c.in's (with the C program's
-- blocks), optim_h = optim.h.in's, optim_c = optim.c.in's }.  Both backends fill the
-- one loop template, each with its own blocks (the CUDA loop takes the same data,
-- schedule, callbacks, loggers).
function emit_train.values(l)
  local g = l.graph
  local sp = l.spec
  local tr = sp.train
  local ty = { ctype = l.settings.compute == "f64" and "double" or "float", sfx = l.settings.compute }
  local ps = l.settings   -- the precision: state and compute formats, loss scaling
  local k16 = storage(l)
  local open, bind, data_desc = data_code(sp, l.fields, ty.ctype, g)
  local aug_def, aug_opt = augment_code(sp)
  local lr_body, sched_desc, onecycle, floor = schedule_code(sp, tr.optimizer)
  -- (the CUDA program's state shards are on the device, its host copies whole: gen/emit_cuda.lua)
  local sharded = l.backend ~= "cuda" and l.strategy and l.strategy.kind == "fsdp" and l.strategy.sharding
  local o = optimizer_code(k16, tr.optimizer, ty.sfx, l.state.params, floor, g.frozen or {}, sharded)
  -- (a training_step clips each optimizer's gradients on its own: no one norm to log)
  local clip_norm = tr.clip ~= nil and tr.clip.max_norm ~= nil and not g.step
  local plateau = tr.scheduler and tr.scheduler.kind == "ReduceLROnPlateau"
  local sc = scaler_code(k16, ps.loss_scaling, clip_norm and l.backend ~= "cuda", function(step)
    if plateau then return "rs.cb[0]", "ReduceLROnPlateau's current lr: run state (callbacks_code)" end
    return string.format("lr_at(%s, rs.epoch, total_steps)", step)
  end, sharded)
  if ps.loss_scaling and g.step then
    -- a training_step's optimizers: each its own count of updates, one scaler for all
    local us = require("user_step").scaler_state(l, SCALER, l.backend == "cuda" and "opt_steps" or nil)
    sc.fields, sc.alloc, sc.save, sc.load = us.fields, us.alloc, us.save, us.load
    sc.loop_vars = ""
    sc.summary = "\n    if (opt.skipped || !args.quiet) printf(\"loss scale %g; %lld optimizer steps skipped for inf/nan gradients\\n\", (double)opt.scaler.scale, (long long)opt.skipped);"
  end
  if ps.loss_scaling then
    -- the scaler and the count of updates taken live with the optimizer (saved with it)
    o.fields = (o.stateless and "" or (o.fields .. "\n")) .. join(sc.fields)
    o.alloc = (o.stateless and "" or (o.alloc .. "\n")) .. join(sc.alloc)
    o.save = (o.saves_nothing and "" or (o.save .. "\n")) .. join(sc.save)
    o.load = (o.saves_nothing and "" or (o.load .. "\n")) .. join(sc.load)
  end
  local clip_body, clip_desc = clip_code(k16, sp, l.strategy and l.strategy.kind == "fsdp" and l.strategy.sharding)
  local has_accuracy = l.accuracy ~= nil
  local metrics = l.trace.metrics or {}   -- train.log's (the CUDA program accumulates them on the device: emit_cuda)
  local callbacks, cb_init, cb_mkdirs, test_desc, test_weights, cb_counts, best_ckpt = callbacks_code(sp, has_accuracy, metrics)
  local state_desc = ({ f32 = "float32", f64 = "float64", bf16 = "bfloat16", f16 = "float16" })[ps.state]
  -- (FSDP's FULL_SHARD holds no whole parameters either, but for the checkpoint rank 0 writes)
  local hooks = hooks_code(sp, l.backend == "cuda" or (l.strategy and l.strategy.sharding == "FULL_SHARD"), state_desc, CKPT_DTYPE[ps.state], has_accuracy)
  local logs = logger_code(sp, has_accuracy, ps.loss_scaling, hooks, clip_norm, best_ckpt,
    group_lr_columns(tr.optimizer, o.groups_list, floor), metrics,
    l.strategy ~= nil and l.strategy.kind ~= "single" and (l.strategy.averaged and "ddp_step" or l.strategy.kind), l.backend == "cuda")
  local mom = o.base_momentum and lit(o.base_momentum) or "0.0"
  local settings = join {
    string.format("#define DEFAULT_EPOCHS %d      // train.epochs (0: run until max_steps)", tr.epochs or 0),
    string.format("#define DEFAULT_MAX_STEPS %d   // train.max_steps (0: no limit)", tr.max_steps or 0),
    string.format("#define DEFAULT_SEED %d", tr.seed),
    string.format("#define ACCUMULATE %d          // micro-batches per optimizer step", tr.accumulate),
    string.format("#define VAL_EVERY %d           // validate every N epochs", tr.val_every),
    string.format("#define LOG_EVERY %d           // progress lines when not on a terminal", 100),
    "#define LOG_FLUSH_SECONDS 5.0  // the loggers' buffered rows are written at least this often",
    string.format("#define CALLBACK_COUNT_SLOTS %s   // callback state slots holding epochs, steps, waits", cb_counts),
    string.format("#define SCHEDULE_SPANS_RUN %d  // the schedule reads the run's total steps (a resume may not change them)",
      schedule_spans_run(tr.scheduler) and 1 or 0),
    string.format("#define LOAD_RAW_PATH %s   // train.load_raw: the weights-only file a new run starts from (--load-raw)",
      tr.load_raw and util.c_string(tr.load_raw.path) or "NULL"),
    string.format("#define LOAD_RAW_STRICT %d   // its strict (--load-raw-strict)", (not tr.load_raw or tr.load_raw.strict) and 1 or 0),
  }
  local step_code = o.step
  local momentum_body, momentum_desc
  local cyc = tr.scheduler and tr.scheduler.kind == "OneCycleLR" and tr.scheduler.args.cycle_momentum
  if cyc then
    -- OneCycleLR cycles the momentum (beta1 for Adam) inversely to the learning rate
    local a = tr.scheduler.args
    local lo, hi = a.base_momentum, a.max_momentum
    local moms = a.three_phase and { { hi, lo }, { lo, hi }, { hi, hi } } or { { hi, lo }, { lo, hi } }
    local lines = onecycle_phases(a, onecycle.ends, moms)
    momentum_body = join(lines)
    momentum_desc = string.format("cycled by OneCycleLR between %s and %s", lit(lo), lit(hi))
  else
    momentum_body = "    (void)step; (void)total_steps;\n    return MOMENTUM;"
    momentum_desc = "constant"
  end
  -- the optimizer_step signature carries the momentum (OneCycleLR cycles it)
  local metrics_block = #metrics > 0 and join {
    string.format("            {   // %s on this micro-batch (the %s computed them)",
      g.step and "the training_step's fabric.log metrics" or "train.log's metrics", g.step and "step" or "forward"),
    "                double v[NUM_USER_METRICS];",
    "                model_user_metrics(&m, &batch, B, v);",
    "                metric_acc_add(&um_step, v, B);",
    "                metric_acc_add(&um_epoch, v, B);",
    "            }",
  } .. "\n" or ""
  local values = {}
  values.train = {
    model_name = g.model_rec.class, spec_file = sp.file, settings = settings,
    default_out = "out",
    data_desc = data_desc, open_data = open, bind_batch = bind, data_globals = aug_def, train_augment = aug_opt,
    optimizer_save = o.save, optimizer_groups = o.groups, optimizer_load = o.load,
    drop_last = "0", callback_init = cb_init, callback_dirs = cb_mkdirs,
    test_desc = test_desc, test_weights = test_weights,
    logger_globals = logs.logger_globals, logger_open = logs.logger_open, log_step = logs.log_step, epoch_train_loss = logs.epoch_train_loss,
    log_epoch = logs.log_epoch, callbacks = callbacks, log_test = logs.log_test, logger_close = logs.logger_close,
    checkpoint_logs = logs.checkpoint_logs,
    state_dtype = CKPT_DTYPE[ps.state], state_desc = state_desc,
    backward = metrics_block .. sc.backward, step_block = sc.step,
    eval_metrics_init = #metrics > 0 and "\n    metric_acc_clear(&um_eval);   // train.log's metrics over this dataset" or "",
    eval_metrics_batch = #metrics > 0 and join {
      "",
      "        {",
      "            double v[NUM_USER_METRICS];",
      "            model_user_metrics(m, &batch, B, v);",
      "            metric_acc_add(&um_eval, v, B);",
      "        }",
    } or "", loop_vars = sc.loop_vars, train_summary = sc.summary,
    die_body = ' fprintf(stderr, "%s\\n", what); exit(1);', eval_reduce = "", shard = "1, 0, 1", global_batch = "BATCH_MAX",
    eval_stop = "signals_stop_requested()",
  }
  if l.strategy and l.strategy.kind ~= "single" then
    -- DDP and FSDP (gen/strategy.lua): errors name their rank; the data is sharded as
    -- DistributedSampler does; the validation's sums are over all ranks; a checkpoint
    -- remembers the global batch (per rank × ranks); rank 0 alone reads the best
    -- checkpoint for the test, and the others get its weights
    local t = values.train
    t.die_body = " ddp_die(what);"
    if l.strategy.sharding == "FULL_SHARD" then
      -- every forward gathers units with every rank: all stop at the same batch
      t.eval_stop = "ddp_any(signals_stop_requested())"
    end
    t.eval_reduce = join {
      "",
      "    // every rank evaluated its shard: the sums over all ranks (DistributedSampler pads the",
      "    // shards to equal length by repeating the first samples, as PyTorch's does); cut when",
      "    // a stop signal cut any rank's short",
      "    double sums[5] = { total, (double)samples, (double)correct, (double)counted, (double)cut };",
      "    ddp_sum(sums, 5);",
      "    total = sums[0]; samples = (int64_t)sums[1]; correct = (int64_t)sums[2]; counted = (int64_t)sums[3];",
      "    cut = sums[4] > 0;",
      #metrics > 0 and "    metric_acc_over_ranks(&um_eval, NULL);   // train.log's, over every rank's batches" or nil,
    }
    t.shard = "ddp_world(), ddp_rank(), 1"
    t.global_batch = "(int64_t)BATCH_MAX * ddp_world()"
    if l.strategy.sharding == "FULL_SHARD" and l.backend ~= "cuda" then   -- (the CUDA program's: gen/emit_cuda.lua)
      -- the current weights whole on rank 0, the best checkpoint read over them there, and
      -- every rank's shard kept from rank 0's
      t.test_weights = join {
        "        Model full = m;   // FSDP FULL_SHARD: the parameters whole for a moment",
        "        full.params = fsdp_gather_param_shards();   // rank 0's; NULL elsewhere",
        "        if (ddp_rank() == 0) {",
        (t.test_weights:gsub("load_weights%(path, &m%)", "load_weights(path, &full)"):gsub("\n", "\n    "):gsub("^", "    ")),
        "        }",
        "        if (ddp_rank() != 0 && !(full.params = malloc(sizeof(state_t) * NUM_PARAMS))) die(\"out of memory reading the best checkpoint\");",
        "        ddp_broadcast(full.params, sizeof(state_t) * NUM_PARAMS);",
        "        fsdp_keep_param_shard(full.params);",
        "        free(full.params);",
        "        ddp_broadcast(m.buffers, sizeof(state_t) * NUM_BUFFERS);",
        "        ddp_broadcast(m.counters, sizeof(int64_t) * NUM_COUNTERS);",
      }
    else
      t.test_weights = join {
        "        if (ddp_rank() == 0) {",
        (t.test_weights:gsub("\n", "\n    "):gsub("^", "    ")),
        "        }",
        "        ddp_broadcast(m.params, sizeof(state_t) * NUM_PARAMS);",
        "        ddp_broadcast(m.buffers, sizeof(state_t) * NUM_BUFFERS);",
        "        ddp_broadcast(m.counters, sizeof(int64_t) * NUM_COUNTERS);",
      }
    end
  end
  if l.autodiff.segments then
    -- a training_step (gen/user_step.lua): each optimizer's step over its parameters
    local code, protos = require("user_step").optim_c(l, function(opt, runs, mine)
      local lr_body, sched_desc, _, fl = schedule_code(sp, opt)   -- train.scheduler on this optimizer's lr
      local c = optimizer_code(k16, opt, ty.sfx, l.state.params, fl, g.frozen or {}, nil, runs, mine)
      c.lr_body, c.sched_desc = lr_body, sched_desc
      c.LD, c.ST = k16.LD, k16.ST   -- (a gradient's load and store: train.clip's)
      return c
    end)
    values.user_step = { code = code, protos = protos }
    -- model_user_step (the loop's forward call, gen/emit_c.lua) runs the backwards and the
    -- optimizers' steps: the loop's own backward and step are not run
    values.train.backward = metrics_block .. "            // (train.training_step's fabric.backward calls ran in model_user_step)"
    values.train.step_block = "            // (its optimizers stepped in model_user_step; lr below is the first optimizer's, for the logs)\n"
      .. "            double lr = lr_at(rs.step, rs.epoch, total_steps);"
  end
  values.ranks_step = logs.ranks_step   -- (DDP/FSDP: the C program's micro-batch slot)
  values.files = hooks.files   -- the user's hook source, compiled into the program
  values.log_every = logs.every   -- a step's row is logged when its step is a multiple (or the run's last)
  -- the parameter groups (nil: one group), each with its lr's ratio to the optimizer's,
  -- and their runs over the parameters' layout: the CUDA program's update reads them
  values.opt_groups = o.groups_list and { groups = o.groups_list, runs = o.runs_list, floor = floor } or nil
  values.optim_h = {
    model_name = g.model_rec.class, spec_file = sp.file, optimizer_desc = o.desc, optimizer_fields = o.fields,
    scaler_types = sc.types, scaler_decls = sc.decls,
  }
  values.optim_c = {
    model_name = g.model_rec.class, spec_file = sp.file, optimizer_desc = o.desc, momentum = mom,
    optimizer_alloc = o.alloc, optimizer_free = o.free, scheduler_desc = sched_desc, lr_body = lr_body,
    optimizer_step = step_code, momentum_body = momentum_body, momentum_desc = momentum_desc,
    clip_desc = clip_desc, clip_body = clip_body, scaler_code = sc.code,
    optim_includes = (sharded and "\n#include \"ddp.h\"   // FSDP: fsdp_lo/fsdp_hi, the shard this rank updates" or "") ..
      (k16.STATE16 and string.format("\n#include \"kernels.h\"   // k_widen_%s / k_narrow_%s: the state is stored in 16 bits", k16.STATE16, k16.STATE16) or ""),
  }
  return values
end

return emit_train
