-- loom: the driver.  It parses the command line and runs the stages that
-- gen/pipeline.lua lists (spec → graph → assign → autodiff → fold → strategy → plan →
-- fuse → emit) for each command; gen/README.md is the map.
local diag = require "diag"
local pipeline = require "pipeline"

local loom = {}

local USAGE = [[
usage: loom COMMAND [options] SPEC

commands:
  help [NAME]             the spec language: every name, or one (loom help Conv2d, loom help train)
  inspect SPEC            print the model as PyTorch prints it, and its parameters
  explain SPEC [-o DIR]   write DIR/REPORT.md and DIR/REPORT.html (default DIR: build/<spec>)
  build SPEC [-o DIR]     generate the C training program in DIR (default build/<spec>) and compile it
  export SPEC --checkpoint CKPT [-o DIR]
                          the trained model as a C library (DIR/libNAME.a, .so, NAME.h) and a CLI (DIR/NAME):
                          inference only, eval mode (default DIR: build/<spec>_export)
  train SPEC [-- FLAGS]   build, then run it; FLAGS go to the program (--epochs N, --max-steps N,
                          --seed N, --resume CKPT, --out DIR, --data DIR, --quiet); then OUT/report.html.
                          A ddp or fsdp spec (devices = N > 1) runs N ranks under mpirun, as loom launch does
  launch SPEC [-n N] [-- FLAGS]  build the DDP or FSDP program and run N ranks on this machine under mpirun
                          (default N: the spec's devices)
  report RUN_DIR... [-o FILE]  the runs' curves (their metrics.csv) as an HTML page of SVG plots, overlaid
                          (default FILE: the first run's log directory/report.html)
  data tokens TEXT -o FILE.bin [--val F]
                          byte-level tokens of a text file (one token per byte, vocabulary 256) in
                          llm.c's token file layout; --val F: the last fraction F of the text goes to
                          FILE_val.bin (0 <= F < 1; default 0: no validation file)

options:
  --dump=STAGE            print what a stage produced and stop (STAGE: spec, graph, assign, autodiff, fold,
                          strategy, plan, entries, fuse, emit)
  --precision=P           override the spec's precision (32-true, 64-true, bf16-mixed, 16-mixed, bf16-true, 16-true)
  --accelerator=A         override the spec's accelerator: cpu, cuda (DIR/train runs on a GPU), auto (DIR/train
                          for the CPU and DIR/cuda/train, which runs the CPU build when there is no device)
  --devices=N             override the spec's devices (the CUDA program runs on one GPU: 1 or auto; a ddp
                          CUDA program's ranks one GPU each, over NCCL); --devices=1 builds a ddp spec as
                          one process (no MPI)
  -n N                    launch: the number of ranks
  --compare-wrapper       explain: also count the casts a run-time wrapper (Fabric + autocast) would make
  --no-fuse               one kernel per op (no fused groups or CPU chains: gen/fuse.lua), to compare with the fused program
  --gemm-attention        CUDA: attention as three GEMMs and the saved (L, S) matrix, not the fused (flash) kernels
  --no-compile            build: write the files only
  --debug                 build, export: compile with -O0 -g (for gdb; the generated code is the same)
  --detect-anomaly        build: check every op's output and gradients for NaN/Inf (fabric { detect_anomaly = true })
  --checkpoint CKPT       export: the trained weights (a loom checkpoint or a safetensors state_dict)
  --max-batch N           export: the most samples one call takes (default: train.batch_size)
  --march A               export: the target CPU (default x86-64-v2, any machine since 2009; native: this one)
  --emit torch            build: also write model.py, the equivalent PyTorch module
  -o DIR                  output directory
  -h, --help              this text; loom COMMAND --help: that command's
  --version               loom's version and the commit it was built from
]]

-- `loom COMMAND --help`: what the command does and the options it takes.
local COMMAND_HELP = {
  inspect = [[
usage: loom inspect SPEC [--dump=STAGE]
Runs the spec and traces the model; prints the model as PyTorch's print(model) does, then
its parameters and buffers with their shapes.  Checks the whole spec: a mistake is
reported with its file:line (exit 2).
]],
  explain = [[
usage: loom explain SPEC [-o DIR] [--precision=P] [--accelerator=A] [--compare-wrapper] [--no-fuse] [--gemm-attention]
Writes DIR/REPORT.md and DIR/REPORT.html (default DIR: build/<spec>): the precision plan
(each tensor's format and every cast), the memory plan, and for CUDA the fused kernels.
]],
  build = [[
usage: loom build SPEC [-o DIR] [--precision=P] [--accelerator=A] [--devices=N] [--no-fuse] [--gemm-attention]
                       [--no-compile] [--emit torch] [--dump=STAGE] [--debug] [--detect-anomaly]
Generates the standalone training program in DIR (default build/<spec>) and compiles it
with ninja: DIR/train (and DIR/cuda/train for accelerator 'auto').  DIR/train --help
lists the program's flags.
]],
  export = [[
usage: loom export SPEC --checkpoint CKPT [-o DIR] [--max-batch N] [--march A] [--precision=P] [--accelerator=cuda] [--debug]
Writes the model's forward, in eval mode (BatchNorm's running statistics, no dropout),
as a C library and a CLI in DIR (default build/<spec>_export), compiles them with ninja
and checks the checkpoint against the model (a tensor missing, of another shape or dtype,
or another precision is refused, named):
  NAME.h            the API: NAME_open, NAME_forward, NAME_close (C and C++)
  libNAME.a/.so     the library: the forward, the weights' loader; no training code
  NAME              the CLI: NAME IN.npy... -o OUT (writes OUT/output.npy), --check, --bench
  NAME.safetensors  the weights (a copy of CKPT)
NAME is the spec's file name.  --march: the target CPU (default x86-64-v2; native).
--accelerator=cuda: the same API and CLI on an NVIDIA GPU (NAME.cu: cuBLASLt GEMMs and
NVRTC kernels compiled at open; calls from several threads take turns on the device).
]],
  train = [[
usage: loom train SPEC [options] [-- FLAGS]
Builds as loom build does, then runs the program.  FLAGS, after --, go to the program:
  --epochs N, --max-steps N   override the spec's epochs / max_steps
  --seed N                    override the seed
  --resume CKPT               continue from a checkpoint (the same spec)
  --out DIR                   where checkpoints and logs go
  --data DIR                  where the data are: FashionMNIST's root; for Npy, Tokens,
                              CSV and ImageFolder the files (folders) of those names in DIR
  --quiet                     no progress lines
e.g. loom train specs/fashion_mlp.lua -- --epochs 1
]],
  launch = [[
usage: loom launch SPEC [-n N] [options] [-- FLAGS]
Builds the spec's DDP or FSDP program (strategy 'ddp', 'fsdp' or 'auto' with devices = N > 1; CPU, or
with --accelerator=cuda the ddp ranks for GPUs, one each, over NCCL) and
runs N ranks of it on this machine: mpirun -n N (--oversubscribe when N is more than the
cores, --allow-run-as-root as root), each rank with OMP_NUM_THREADS = cores / N unless
set.  The spec's batch_size is each rank's (Fabric's): the global batch is N times it.
FLAGS go to every rank (as loom train's), and --ddp-timeout S: a rank that waits longer
than S seconds in one collective (another rank died or is stuck) ends the job.
Several machines: mpirun --hostfile FILE -n N DIR/train FLAGS (OpenMPI's own launcher).
]],
  data = [[
usage: loom data tokens TEXT -o FILE.bin [--val F]
Writes byte-level tokens of a text file (one token per byte, vocabulary 256) in llm.c's
token file layout (a header of 256 int32: magic 20240520, version 1, the count; then
uint16 tokens).  --val F: the text's last fraction F goes to FILE_val.bin (0 <= F < 1).
A spec reads them with data = Tokens { train = "FILE.bin", val = "FILE_val.bin", context = T }.
]],
  help = [[
usage: loom help [NAME]
Without NAME: every name a spec can use, by kind.  With NAME: what it is, its PyTorch,
Lightning or Fabric counterpart, its signature or settings, and an example
(e.g. loom help Conv2d, loom help train, loom help fabric, loom help EarlyStopping).
The same reference is docs/SPEC.md; docs/GUIDE.md goes from a Fabric script to a spec.
]],
  report = [[
usage: loom report RUN_DIR... [-o FILE]
Writes one self-contained HTML page of SVG plots of the runs' metrics.csv (training and
validation loss, accuracy, learning rate, throughput, loss scale under 16-mixed), several
runs overlaid, beside their hyperparameters (default FILE: the first run's log
directory/report.html).  loom train writes OUT/report.html after a run.
]],
}

-- The generated program's flags: given before `--`, they get a hint.
local PROGRAM_FLAGS = { ["--epochs"] = true, ["--max-steps"] = true, ["--seed"] = true, ["--resume"] = true,
                        ["--out"] = true, ["--data"] = true, ["--quiet"] = true }

local STAGES = pipeline.NAMES

local function usage_error(msg)
  diag.fatal(nil, msg .. " (loom --help for usage)")
end

local function parse_args(args)
  local opts = { positional = {}, program_args = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      -- everything after -- goes to the generated program
      for j = i + 1, #args do opts.program_args[#opts.program_args + 1] = args[j] end
      break
    elseif a == "-h" or a == "--help" then opts.help = true
    elseif a == "--version" then opts.version = true
    elseif a == "--markdown" then opts.markdown = true
    elseif a == "--no-compile" then opts.no_compile = true
    elseif a == "--compare-wrapper" then opts.compare_wrapper = true
    elseif a == "--no-fuse" then opts.no_fuse = true
    elseif a == "--gemm-attention" then opts.gemm_attention = true
    elseif a == "--debug" then opts.debug = true
    elseif a == "--detect-anomaly" then opts.detect_anomaly = true
    elseif a == "--checkpoint" then
      i = i + 1
      opts.checkpoint = args[i] or usage_error("--checkpoint needs a file")
    elseif a == "--march" then
      i = i + 1
      opts.march = args[i] or usage_error("--march needs a CPU name (x86-64-v2, x86-64-v3, native, ...)")
      if not opts.march:match("^[%w%-_.]+$") then usage_error("--march takes a CPU name such as x86-64-v2 or native, not '" .. opts.march .. "'") end
    elseif a == "--max-batch" then
      i = i + 1
      local n = tonumber(args[i] or "")
      if not n or math.type(n) ~= "integer" and n ~= math.floor(n) or n < 1 or n > 1048576 then
        usage_error("--max-batch takes a whole number of samples from 1 to 1048576")
      end
      opts.max_batch = math.tointeger(n)
    elseif a == "--emit" then
      i = i + 1
      if args[i] ~= "torch" then usage_error("--emit takes 'torch' (also write model.py, the PyTorch equivalent)") end
      opts.emit_torch = true
    elseif a == "--val" then
      i = i + 1
      local f = tonumber(args[i] or "")
      if not f or f < 0 or f >= 1 then usage_error("--val takes a fraction F, 0 <= F < 1 (the validation part of the text)") end
      opts.val = f
    elseif a == "-n" then
      i = i + 1
      local n = math.tointeger(tonumber(args[i] or ""))
      if not n or n < 1 then usage_error("-n takes a number of ranks (a positive integer)") end
      opts.ranks = n
    elseif a == "-o" then
      i = i + 1
      opts.out = args[i] or usage_error("-o needs a directory")
    elseif a:match("^%-%-precision=") then
      local prec, msg = require("spec").check_precision(a:sub(13), "--precision")
      if not prec then usage_error(msg) end
      opts.precision = prec
    elseif a:match("^%-%-accelerator=") then
      opts.accelerator = a:sub(15)
      if not ({ cpu = true, cuda = true, gpu = true, auto = true })[opts.accelerator] then
        usage_error("--accelerator takes cpu, cuda or auto, not '" .. opts.accelerator .. "'")
      end
      if opts.accelerator == "gpu" then opts.accelerator = "cuda" end
    elseif a:match("^%-%-devices=") then
      local v = a:sub(11)
      local d, msg = require("spec").check_devices(v:match("^%d+$") and math.tointeger(tonumber(v)) or v, "--devices")
      if not d then usage_error(msg) end
      opts.devices = d
    elseif a:match("^%-%-dump=") then
      opts.dump = a:sub(8)
      local ok = false
      for _, s in ipairs(STAGES) do if s == opts.dump then ok = true end end
      if not ok then usage_error("unknown stage '" .. opts.dump .. "' for --dump (one of: " .. table.concat(STAGES, ", ") .. ")") end
    elseif PROGRAM_FLAGS[a:match("^[^=]*")] then
      local flag = a:match("^[^=]*")
      local value = a:match("=(.*)$") or (flag ~= "--quiet" and args[i + 1] and args[i + 1]:sub(1, 1) ~= "-" and args[i + 1])
      usage_error(string.format("'%s' is a flag of the generated program: pass it after --, as in loom train SPEC -- %s%s",
        flag, flag, value and (" " .. value) or ""))
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      usage_error("unknown option '" .. a .. "'")
    else
      opts.positional[#opts.positional + 1] = a
    end
    i = i + 1
  end
  return opts
end

local function spec_basename(path)
  return (path:match("([^/]+)$") or path):gsub("%.lua$", "")
end

local function write(path, text)
  local loomc = require "loomc"
  local ok, err = loomc.write_file(path, text)
  if not ok then diag.fatal(nil, "cannot write " .. err) end
end

-- FNV-1a of the spec's text: checkpoints remember which spec made them.
local function spec_hash(text)
  local h = 0xcbf29ce484222325
  for i = 1, #text do h = ((h ~ text:byte(i)) * 0x100000001b3) & 0xffffffffffffffff end
  return string.format("%016x", h)
end

-- $LOOM_CFLAGS / $LOOM_LDFLAGS, appended to a generated C program's flags (tests/asan.sh
-- builds with sanitizers); written into its build.ninja, so ninja rebuilds when they change
local function ninja_flags(name)
  local v = os.getenv(name)
  return v and v ~= "" and " " .. v:gsub("[%$\n]", { ["$"] = "$$", ["\n"] = " " }) or ""
end

-- What the stages after the graph get from the command line, for `backend`.
local function target(g, opts, backend, extra)
  local t = { backend = backend, precision = opts.precision, devices = opts.devices, no_fuse = opts.no_fuse, debug = opts.debug,
              gemm_attention = opts.gemm_attention,
              detect_anomaly = opts.detect_anomaly,
              spec_hash = spec_hash(g.spec.text),
              extra_cflags = ninja_flags("LOOM_CFLAGS"), extra_ldflags = ninja_flags("LOOM_LDFLAGS") }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local commands = {}

function commands.inspect(opts, path)
  local g = pipeline.front_end(path, opts.dump)
  if g then io.write(require("inspect").text(g)) end
end

function commands.explain(opts, path)
  local g = pipeline.front_end(path, opts.dump)
  if not g then return end
  local report = require "report"
  local dir = opts.out or ("build/" .. spec_basename(path))
  local ok, err = require("loomc").mkdir_p(dir)
  if not ok then diag.fatal(nil, "cannot create " .. err) end
  -- the C backend's plan, when the spec trains and every op is on that backend, and
  -- the operand conversions its kernels make (gen/kernels_c.lua)
  local l, counted
  if g.loss and g.spec.train and require("emit_c").runs(g) then
    l = pipeline.lower(g, target(g, opts, "cpu", { spec_hash = "" }), opts.dump)
    if not l then return end   -- --dump= a stage after the graph
    local kernels_c = require "kernels_c"
    counted = kernels_c.counted(kernels_c.walk(l))
  end
  local sections = { report.precision_section(l, counted, opts.compare_wrapper), report.memory_section(l, counted),
                     report.collectives_section(l) }
  -- the CUDA program's choices and fused kernels, for accelerator "cuda" or "auto" (the
  -- spec's or --accelerator=)
  local accel = opts.accelerator or g.spec.fabric.accelerator
  if (accel == "cuda" or accel == "gpu" or accel == "auto") and g.loss and g.spec.train then
    local cuda = require "emit_cuda"
    local ok, why = cuda.available(g, opts.precision, opts.devices, opts.detect_anomaly)
    local result, lc = { counted = { unavailable = why } }, nil
    if ok then result, lc = pipeline.program(g, target(g, opts, "cuda", { spec_hash = "" })) end
    -- the CUDA program's ranks (NCCL), in place of the CPU program's (MPI)
    if sections[3] and lc and lc.strategy and lc.strategy.kind ~= "single" then sections[3] = report.collectives_section(lc) end
    sections[#sections + 1] = report.cuda_section(g, lc, result.counted)
    sections[#sections + 1] = report.fuse_section(lc, ok and result.counted or nil, opts.no_fuse, why)
  end
  local md = report.markdown(g, sections)
  write(dir .. "/REPORT.md", md)
  write(dir .. "/REPORT.html", report.html(g.model_rec.class .. " — loom report", md))
  io.write(string.format("wrote %s/REPORT.md and %s/REPORT.html\n", dir, dir))
end

-- Writes the program's files into dir (subdirectories too).  Unchanged files keep
-- their timestamps, so ninja rebuilds only what changed.
local function write_program(dir, files)
  local loomc = require "loomc"
  local names = require("util").sorted_keys(files)
  for _, name in ipairs(names) do
    local sub = name:match("^(.*)/[^/]*$")
    local ok, err = loomc.mkdir_p(sub and (dir .. "/" .. sub) or dir)
    if not ok then diag.fatal(nil, "cannot create " .. err) end
  end
  for _, name in ipairs(names) do
    local f = io.open(dir .. "/" .. name, "rb")
    local old = f and f:read("a")
    if f then f:close() end
    if old ~= files[name] then write(dir .. "/" .. name, files[name]) end
  end
  return dir
end

-- graph → the C program in dir (generated files, runtime, build.ninja; --emit torch:
-- model.py).  Returns dir, or nil after a --dump.
local function generate(g, opts, dir)
  local result = pipeline.program(g, target(g, opts, "cpu"), opts.dump)
  if not result then return nil end
  if opts.emit_torch then result.files["model.py"] = require("emit_torch").module(g) end
  return write_program(dir, result.files)
end

-- graph → the CUDA program in dir.  Returns dir, or nil after a --dump.
local function generate_cuda(g, opts, dir, accelerator, cpu_program)
  local result = pipeline.program(g, target(g, opts, "cuda", { accelerator = accelerator, cpu_program = cpu_program }), opts.dump)
  if not result then return nil end
  return write_program(dir, result.files)
end

-- The CUDA program (gen/emit_cuda.lua) for accelerator "cuda" (in DIR) or "auto" (in
-- DIR/cuda, beside the CPU build it falls back to).
local function accelerator_of(g, opts)
  local a = opts.accelerator or g.spec.fabric.accelerator or "cpu"
  if a == "gpu" then a = "cuda" end
  return a
end

local function compile(dir)
  local how, code = require("loomc").spawn({ "ninja", "-C", dir }, dir .. "/build.log")
  if not how then diag.fatal(nil, code) end
  if how ~= "exit" or code ~= 0 then
    local f = io.open(dir .. "/build.log")
    local log = f and f:read("a") or ""
    if f then f:close() end
    io.stderr:write(log)
    diag.fatal(nil, string.format("the generated program in %s did not compile (loom's bug; log above and in %s/build.log)", dir, dir))
  end
end

-- spec → the program for its accelerator: the C program in DIR ("cpu"), the CUDA one in
-- DIR ("cuda"), or both, the CUDA one in DIR/cuda ("auto", when the CUDA backend can
-- build it; else said once).  Returns the CPU dir (or nil), the CUDA dir (or nil).
local function generate_for_accelerator(path, opts)
  local g = pipeline.front_end(path, opts.dump)   -- the spec runs once
  if not g then return nil end
  opts.graph = g
  local accel = accelerator_of(g, opts)
  local dir = opts.out or ("build/" .. spec_basename(path))
  if accel == "cpu" then return generate(g, opts, dir), nil end
  if accel == "cuda" then return nil, generate_cuda(g, opts, dir, "cuda") end
  local cpu_dir = generate(g, opts, dir)
  if not cpu_dir then return nil end
  -- several ranks: the CUDA program's fall back to the CPU build would be a rank of another
  -- job; "auto" builds the CPU's ranks, --accelerator=cuda the GPU's (ddp over NCCL)
  local kind, n = require("strategy").requested(g.spec, opts)
  if kind ~= "single" then
    io.stderr:write(string.format("note: accelerator \"auto\" with %d ranks: built for the CPU (%s over MPI); " ..
      "--accelerator=cuda builds the ranks for GPUs (ddp over NCCL)\n", n, kind))
    return cpu_dir, nil
  end
  local ok, why = require("emit_cuda").available(g, opts.precision, opts.devices, opts.detect_anomaly)
  if not ok then
    io.stderr:write(string.format("note: accelerator \"auto\": %s; built for the CPU only\n", why))
    return cpu_dir, nil
  end
  return cpu_dir, generate_cuda(g, opts, cpu_dir .. "/cuda", "auto", "../train")
end

function commands.build(opts, path)
  local dir, cuda_dir = generate_for_accelerator(path, opts)
  if not dir and not cuda_dir then return end
  for _, d in ipairs { dir or false, cuda_dir or false } do
    if d and opts.no_compile then
      io.write(string.format("wrote %s (not compiled: ninja -C %s)\n", d, d))
    elseif d then
      compile(d)
      io.write(string.format("built %s/train\n", d))
    end
  end
end

-- loom export SPEC --checkpoint CKPT: the library, its header and CLI in DIR, compiled;
-- the checkpoint copied beside them and checked by the CLI (its one line on a mismatch).
function commands.export(opts, path)
  -- the library is for the CPU unless --accelerator=cuda says a GPU (the spec's
  -- accelerator is the training program's)
  local cuda = opts.accelerator == "cuda"
  if opts.accelerator and opts.accelerator ~= "cpu" and not cuda then
    usage_error("export writes a library for one target: --accelerator=cpu (the default) or cuda, not " .. opts.accelerator)
  end
  if cuda and opts.march then usage_error("--march is the CPU library's target; the CUDA library is built for sm_80 and sm_90") end
  if not opts.checkpoint and not opts.dump then usage_error("export needs --checkpoint CKPT (the trained weights)") end
  local g = pipeline.front_end(path, opts.dump)
  if not g then return end
  local name = spec_basename(path):gsub("[^%w_]", "_")
  if name:match("^%d") then name = "m" .. name end
  local max_batch = opts.max_batch or (g.spec.train and g.spec.train.batch_size) or 1
  -- (the CUDA library is one process on one device, whatever the training's devices)
  local result = pipeline.program(g, target(g, opts, cuda and "cuda" or "export", { inference = true, max_batch = max_batch,
    march = opts.march, export_name = name, devices = cuda and 1 or opts.devices }), opts.dump)
  if not result then return end
  local f = io.open(opts.checkpoint, "rb")
  if not f then diag.fatal(nil, opts.checkpoint .. ": cannot open the checkpoint") end
  local weights = f:read("a")
  f:close()
  local dir = opts.out or ("build/" .. spec_basename(path) .. "_export")
  write_program(dir, result.files)
  write(dir .. "/" .. name .. ".safetensors", weights)
  if opts.no_compile then io.write(string.format("wrote %s (not compiled: ninja -C %s)\n", dir, dir)); return 0 end
  compile(dir)
  -- the weights against the model: the CLI's one line when they are another model's
  local how, code = require("loomc").spawn({ dir .. "/" .. name, "--check" }, dir .. "/check.log")
  local lf = io.open(dir .. "/check.log")
  local log = lf and lf:read("a") or ""
  if lf then lf:close() end
  -- the CUDA library reads the weights before it looks for a device: without one, they
  -- were checked all the same
  local no_device = cuda and log:find("no CUDA device", 1, true) ~= nil
  if (how ~= "exit" or code ~= 0) and not no_device then
    os.remove(dir .. "/" .. name .. ".safetensors")
    diag.fatal(nil, (log:gsub("^" .. name .. ": ", ""):gsub("\n$", "")))
  end
  if no_device then io.stderr:write("note: no CUDA device here: the weights are checked, no forward was run\n") end
  io.write(string.format("exported %s: %s/%s.h, %s/lib%s.a, %s/lib%s.so, %s/%s (max batch %d, %s, %s)\n", g.model_rec.class,
    dir, name, dir, name, dir, name, dir, name, max_batch, cuda and "CUDA sm_80/sm_90" or (opts.march or "x86-64-v2"),
    opts.debug and "-O0 -g" or (cuda and "-O2" or "-O3")))
end

local function loomc_list_dir(d) return require("loomc").list_dir(d) end

-- mpirun's command line for n ranks of argv on this machine (OpenMPI from Debian)
local function mpirun_argv(n, argv)
  local cores = 0
  local f = io.open("/proc/cpuinfo")
  if f then for line in f:lines() do if line:match("^processor%s*:") then cores = cores + 1 end end f:close() end
  if cores == 0 then cores = 1 end
  local root = false
  f = io.open("/proc/self/status")
  if f then for line in f:lines() do local uid = line:match("^Uid:%s*(%d+)") if uid then root = uid == "0" end end f:close() end
  local out = { "mpirun", "-n", tostring(n) }
  if root then out[#out + 1] = "--allow-run-as-root" end
  if n > cores then out[#out + 1] = "--oversubscribe" end
  if not os.getenv("OMP_NUM_THREADS") then
    out[#out + 1] = "-x"
    out[#out + 1] = "OMP_NUM_THREADS=" .. math.max(1, cores // n)
  end
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

-- loom launch SPEC [-n N] [-- FLAGS]: the DDP or FSDP program's N ranks under mpirun
function commands.launch(opts, path)
  -- the CPU's ranks (MPI), or with --accelerator=cuda the GPUs' (ddp over NCCL)
  local cuda = opts.accelerator == "cuda" or opts.accelerator == "gpu"
  opts.accelerator = cuda and "cuda" or "cpu"
  local g = pipeline.front_end(path, opts.dump)
  if not g then return end
  local kind, n = require("strategy").requested(g.spec, { devices = opts.ranks and opts.ranks > 1 and opts.ranks or opts.devices })
  if kind ~= "ddp" and kind ~= "fsdp" then
    diag.fatal(g.spec.fabric.where, string.format("loom launch runs a ddp or fsdp program: this spec asks for strategy '%s' on %d device(s) " ..
      "(fabric { strategy = \"ddp\", devices = N } or -n N with N > 1)", g.spec.fabric.strategy, n))
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.devices = n
  local out = opts.out or ("build/" .. spec_basename(path))
  local dir
  if cuda then dir = generate_cuda(g, o, out, "cuda") else dir = generate(g, o, out) end
  if not dir then return end
  compile(dir)
  local argv = mpirun_argv(opts.ranks or n, { dir .. "/train", table.unpack(opts.program_args) })
  io.write(table.concat(argv, " "), "\n")
  io.stdout:flush()
  local how, code = require("loomc").spawn(argv)
  if not how then diag.fatal(nil, code) end
  return how == "exit" and code or 128 + code
end

-- The run's report.html as an artifact of each MLflow run it logged to (the run ids
-- are in last.safetensors' metadata, mlflow.run_id.N for the spec's Nth MLFlowLogger):
-- STORE/EXP/RUN/artifacts/report.html, written after the program has closed the run.
local function mlflow_report_artifacts(sp, out, report)
  local f = io.open(out .. "/last.safetensors", "rb")
  if not f then return end
  local head = f:read(8)
  local n = head and #head == 8 and string.unpack("<I8", head)
  local header = n and n < (1 << 24) and f:read(n) or ""
  f:close()
  local html = io.open(report, "rb")
  local text = html and html:read("a")
  if html then html:close() end
  if not text then return end
  local i = 0
  for _, lg in ipairs(sp.train and sp.train.loggers or {}) do
    if lg.kind == "MLFlowLogger" then
      local id = header:match('"mlflow%.run_id%.' .. i .. '"%s*:%s*"(%x+)"')
      i = i + 1
      local store = require("spec").mlflow_store(lg.args).dir
      if store:sub(1, 1) ~= "/" then store = out .. "/" .. store end
      for _, exp in ipairs(id and loomc_list_dir(store) or {}) do
        local artifacts = store .. "/" .. exp .. "/" .. id .. "/artifacts"
        if loomc_list_dir(artifacts) then
          write(artifacts .. "/report.html", text)
          io.write("report: MLflow artifact ", artifacts, "/report.html\n")
        end
      end
    end
  end
end

function commands.train(opts, path)
  local cpu_dir, cuda_dir = generate_for_accelerator(path, opts)
  if not cpu_dir and not cuda_dir then return end
  if cpu_dir then compile(cpu_dir) end
  if cuda_dir then compile(cuda_dir) end
  local dir = cuda_dir or cpu_dir
  local argv = { dir .. "/train", table.unpack(opts.program_args) }
  local kind, n = require("strategy").requested(opts.graph.spec, opts)
  if kind == "ddp" or kind == "fsdp" then argv = mpirun_argv(opts.ranks or n, argv) end
  io.stdout:flush()
  local how, code = require("loomc").spawn(argv)
  if not how then diag.fatal(nil, code) end
  if how == "exit" and code == 0 then
    -- the run's curves: OUT/report.html (OUT: the program's --out, default "out")
    local out = "out"
    for i, a in ipairs(opts.program_args) do if a == "--out" and opts.program_args[i + 1] then out = opts.program_args[i + 1] end end
    if loomc_list_dir(out) then
      local report = require("runreport").write({ out }, out .. "/report.html")
      io.write("report: ", report, "\n")
      mlflow_report_artifacts(opts.graph.spec, out, report)
    end
  end
  return how == "exit" and code or 128 + code
end

-- loom help [NAME] (--markdown: the whole reference, docs/SPEC.md)
function commands.help(opts, name)
  local docs = require "docs"
  if opts.markdown then io.write(docs.markdown()); return 0 end
  if not name then io.write(docs.index()); return 0 end
  local d = docs.find(name)
  if not d then
    local spec = require "spec"
    local dsl, lua = spec.environment()
    for _, n in ipairs(lua) do dsl[#dsl + 1] = n end
    diag.fatal(nil, spec.unknown_name(name, dsl) .. " (loom help lists every name)")
  end
  io.write(docs.text(d))
  return 0
end

-- loom report RUN_DIR... [-o FILE]: the runs' curves as one HTML page
function commands.report(opts, paths)
  local out = require("runreport").write(paths, opts.out)
  print("wrote " .. out)
end

-- Byte-level tokens in llm.c's token file layout (runtime/tokens.c reads it): a header of
-- 256 little-endian int32 (magic 20240520, version 1, the count), then uint16 tokens.
local TOKENS_MAGIC, TOKENS_VERSION, TOKENS_HEADER_INTS = 20240520, 1, 256

local function token_file_text(bytes)
  local head = string.pack("<i4i4i4", TOKENS_MAGIC, TOKENS_VERSION, #bytes) .. string.rep("\0", 4 * (TOKENS_HEADER_INTS - 3))
  return head .. bytes:gsub(".", "%0\0")   -- token = byte: the low byte, a zero high byte
end

-- loom data tokens TEXT -o FILE.bin [--val F]
function commands.data(opts, what, text_path)
  if what ~= "tokens" then usage_error("data takes 'tokens': loom data tokens TEXT -o FILE.bin [--val F]") end
  if not text_path then usage_error("data tokens takes a text file: loom data tokens TEXT -o FILE.bin [--val F]") end
  local out = opts.out or usage_error("data tokens needs -o FILE.bin")
  if require("loomc").is_regular_file(text_path) == false then diag.fatal(nil, text_path .. ": cannot open: not a regular file") end
  local f, why = io.open(text_path, "rb")
  if not f then diag.fatal(nil, why) end
  local text = f:read("a")
  f:close()
  if #text == 0 then diag.fatal(nil, text_path .. ": empty: no bytes to make tokens of") end
  if #text > 0x7fffffff then diag.fatal(nil, text_path .. ": more than 2^31 bytes: too large for a token file") end
  -- validation = the text's last fraction (a fixed split, as nanoGPT's prepare.py)
  local n_val = math.floor(#text * (opts.val or 0))
  local n_train = #text - n_val
  write(out, token_file_text(text:sub(1, n_train)))
  io.write(string.format("wrote %s (%d tokens)\n", out, n_train))
  if n_val > 0 then
    local val_path = out:gsub("%.bin$", "") .. "_val.bin"
    write(val_path, token_file_text(text:sub(n_train + 1)))
    io.write(string.format("wrote %s (%d tokens)\n", val_path, n_val))
  end
end

local function run(args)
  local opts = parse_args(args)
  local cmd = opts.positional[1]
  if opts.version then
    local loomc = require "loomc"
    io.write(string.format("loom %s (commit %s)\n", loomc.version, loomc.commit))
    return 0
  end
  if opts.help then io.write(cmd and COMMAND_HELP[cmd] or USAGE); return 0 end
  if cmd == "help" then
    if #opts.positional > 2 then usage_error("help takes at most one NAME") end
    return commands.help(opts, opts.positional[2])
  end
  if not cmd then io.stderr:write(USAGE); return 2 end
  local f = commands[cmd]
  if not f then
    local names = {}
    for k in pairs(commands) do names[#names + 1] = k end
    table.sort(names)
    usage_error(string.format("unknown command '%s'%s", cmd, require("util").did_you_mean(cmd, names)))
  end
  if cmd == "report" then
    if #opts.positional < 2 then usage_error("report takes one or more run directories") end
    return f(opts, table.pack(table.unpack(opts.positional, 2))) or 0
  end
  if cmd == "data" then
    if #opts.positional > 3 then usage_error("data tokens takes one text file") end
    return f(opts, opts.positional[2], opts.positional[3]) or 0
  end
  if #opts.positional ~= 2 then usage_error(cmd .. " takes one SPEC file") end
  return f(opts, opts.positional[2]) or 0
end

-- Entry point called by the C host.  A user's error prints as diagnostics and
-- exits 2; anything else is loom's own bug.
function loom.main(args)
  local ok, result = xpcall(run, function(e)
    if diag.is_failure(e) then return e end
    return { internal = debug.traceback(tostring(e), 2) }
  end, args)
  if ok then return result or 0 end
  if result.internal then
    io.stderr:write("loom: internal error: ", result.internal, "\n")
    return 70
  end
  io.stderr:write(result.text, "\n")
  return 2
end

return loom
