-- loom: the driver.  It only parses the command line and lists the stages;
-- each stage is one module that takes the previous stage's data.
local diag = require "diag"

local loom = {}

local USAGE = [[
usage: loom COMMAND [options] SPEC

commands:
  inspect SPEC            print the model as PyTorch prints it, and its parameters
  explain SPEC [-o DIR]   write DIR/REPORT.md and DIR/REPORT.html (default DIR: build/<spec>)
  build SPEC [-o DIR]     generate the C training program in DIR (default build/<spec>) and compile it
  train SPEC [-- FLAGS]   build, then run it; FLAGS go to the program (--epochs N, --max-steps N,
                          --seed N, --resume CKPT, --out DIR, --data DIR, --quiet)

options:
  --dump=STAGE            print what a stage produced and stop (STAGE: spec, graph)
  --precision=P           override the spec's precision (32-true, 64-true, bf16-mixed, 16-mixed, bf16-true, 16-true)
  --accelerator=A         override the spec's accelerator: cpu, cuda (DIR/train runs on a GPU), auto (DIR/train
                          for the CPU and DIR/cuda/train, which runs the CPU build when there is no device)
  --devices=N             override the spec's devices (the CUDA program runs on one GPU: 1 or auto)
  --compare-wrapper       explain: also count the casts a run-time wrapper (Fabric + autocast) would make
  --no-fuse               CUDA: one kernel per op (no fused groups: gen/fuse.lua), to compare with the fused program
  --no-compile            build: write the files only
  --emit torch            build: also write model.py, the equivalent PyTorch module
  -o DIR                  output directory
  -h, --help              this text
]]

local STAGES = { "spec", "graph" }

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
    elseif a == "--no-compile" then opts.no_compile = true
    elseif a == "--compare-wrapper" then opts.compare_wrapper = true
    elseif a == "--no-fuse" then opts.no_fuse = true
    elseif a == "--emit" then
      i = i + 1
      if args[i] ~= "torch" then usage_error("--emit takes 'torch' (also write model.py, the PyTorch equivalent)") end
      opts.emit_torch = true
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

-- The front end: spec → graph.  Stops early for --dump.
local function front_end(path, opts)
  local sp = require("spec").load(path)
  if opts.dump == "spec" then
    io.write(string.format("spec %s: model %s, inputs %d, fabric %s/%s/%s, train %s\n", sp.file, sp.model_name,
      #sp.inputs, sp.fabric.accelerator, sp.fabric.precision, sp.fabric.strategy, sp.train and "yes" or "no"))
    return nil
  end
  local g = require("graph").build(sp)
  if opts.dump == "graph" then
    io.write(require("graph").dump(g))
    return nil
  end
  return g
end

local commands = {}

function commands.inspect(opts, path)
  local g = front_end(path, opts)
  if g then io.write(require("inspect").text(g)) end
end

function commands.explain(opts, path)
  local g = front_end(path, opts)
  if not g then return end
  local report = require "report"
  local dir = opts.out or ("build/" .. spec_basename(path))
  local ok, err = require("loomc").mkdir_p(dir)
  if not ok then diag.fatal(nil, "cannot create " .. err) end
  -- the C backend's plan, when the spec trains and every op is on that backend
  local info
  if g.loss and g.spec.train then
    local ok = true
    for _, node in ipairs(g.loss.nodes) do if not require("ops_cpu")[node.op] then ok = false end end
    if ok then
      local _
      _, info = require("emit_c").model(g, { precision = opts.precision, spec_hash = "" })
    end
  end
  local sections = { report.precision_section(g, info, opts.compare_wrapper), report.memory_section(g, info) }
  -- the CUDA program's choices and fused kernels, for accelerator "cuda" or "auto" (the
  -- spec's or --accelerator=)
  local accel = opts.accelerator or g.spec.fabric.accelerator
  if (accel == "cuda" or accel == "gpu" or accel == "auto") and g.loss and g.spec.train then
    local cuda = require "emit_cuda"
    local ok, why = cuda.available(g, opts.precision, opts.devices)
    local cinfo = { unavailable = why }
    if ok then
      local _
      _, cinfo = cuda.program(g, { precision = opts.precision, spec_hash = "", devices = opts.devices, no_fuse = opts.no_fuse })
    end
    sections[#sections + 1] = report.cuda_section(g, cinfo)
    sections[#sections + 1] = report.fuse_section(g, ok and cinfo or nil, opts.no_fuse, why)
  end
  local md = report.markdown(g, sections)
  write(dir .. "/REPORT.md", md)
  write(dir .. "/REPORT.html", report.html(g.model_rec.class .. " — loom report", md))
  io.write(string.format("wrote %s/REPORT.md and %s/REPORT.html\n", dir, dir))
end

-- FNV-1a of the spec's text: checkpoints remember which spec made them.
local function spec_hash(text)
  local h = 0xcbf29ce484222325
  for i = 1, #text do h = ((h ~ text:byte(i)) * 0x100000001b3) & 0xffffffffffffffff end
  return string.format("%016x", h)
end

-- Runtime and kernel files copied next to every generated C program.
local RUNTIME_PREFIXES = { "runtime/", "templates/cpu/" }
-- the CUDA backend's runtime files (gen/emit_cuda.lua copies them), not the C program's
local CUDA_ONLY = { ["runtime/nvrtc_cache.c"] = true, ["runtime/nvrtc_cache.h"] = true,
                    ["runtime/loom_cuda.cu"] = true, ["runtime/loom_cuda.h"] = true }

-- spec → graph → C program in DIR (generated files, runtime, build.ninja).
local function generate(path, opts)
  local g = front_end(path, opts)
  if not g then return nil end
  local emit_c = require "emit_c"
  local files, info = emit_c.model(g, { precision = opts.precision, spec_hash = spec_hash(g.spec.text), backend = "cpu" })
  for name, text in pairs(require("emit_train").program(g, info, {})) do files[name] = text end
  local loomc = require "loomc"
  local template = require "template"
  for _, prefix in ipairs(RUNTIME_PREFIXES) do
    for _, p in ipairs(loomc.embedded_list(prefix)) do
      if not CUDA_ONLY[p] then files[p:match("([^/]+)$")] = template.source(p) end
    end
  end
  local objects, list = {}, {}
  local names = {}
  for name in pairs(files) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    if name:match("%.c$") then
      local obj = "obj/" .. name:gsub("%.c$", ".o")
      objects[#objects + 1] = string.format("build %s: cc %s", obj, name)
      list[#list + 1] = obj
    end
  end
  -- $LOOM_CFLAGS / $LOOM_LDFLAGS are appended to the program's flags (tests/asan.sh
  -- builds with sanitizers); written into build.ninja, so ninja rebuilds when they change
  local function ninja_flags(name)
    local v = os.getenv(name)
    return v and v ~= "" and " " .. v:gsub("[%$\n]", { ["$"] = "$$", ["\n"] = " " }) or ""
  end
  files["build.ninja"] = template.fill("templates/c/build.ninja.in", {
    model_name = g.model_rec.class, spec_file = g.spec.file,
    extra_cflags = ninja_flags("LOOM_CFLAGS"), extra_ldflags = ninja_flags("LOOM_LDFLAGS"),
    objects = table.concat(objects, "\n"), object_list = table.concat(list, " "),
  })
  if opts.emit_torch then files["model.py"] = require("emit_torch").module(g) end
  local dir = opts.out or ("build/" .. spec_basename(path))
  local ok, err = loomc.mkdir_p(dir)
  if not ok then diag.fatal(nil, "cannot create " .. err) end
  names = {}
  for name in pairs(files) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    -- unchanged files keep their timestamps, so ninja rebuilds only what changed
    local f = io.open(dir .. "/" .. name, "rb")
    local old = f and f:read("a")
    if f then f:close() end
    if old ~= files[name] then write(dir .. "/" .. name, files[name]) end
  end
  return dir, g
end

-- The CUDA program (gen/emit_cuda.lua) for accelerator "cuda" (in DIR) or "auto" (in
-- DIR/cuda, beside the CPU build it falls back to).
local function accelerator_of(g, opts)
  local a = opts.accelerator or g.spec.fabric.accelerator or "cpu"
  if a == "gpu" then a = "cuda" end
  return a
end

local function compile(dir)
  local ok = os.execute(string.format("ninja -C '%s' >'%s/build.log' 2>&1", dir, dir))
  if not ok then
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
  local g = front_end(path, opts)
  if not g then return nil end
  local accel = accelerator_of(g, opts)
  if accel == "cpu" then return generate(path, opts), nil end
  local cuda = require "emit_cuda"
  local dir = opts.out or ("build/" .. spec_basename(path))
  if accel == "cuda" then
    return nil, cuda.generate(g, dir, { precision = opts.precision, spec_hash = spec_hash(g.spec.text), accelerator = "cuda",
                                        no_fuse = opts.no_fuse, devices = opts.devices })
  end
  local cpu_dir = generate(path, opts)
  local ok, why = cuda.available(g, opts.precision, opts.devices)
  if not ok then
    io.stderr:write(string.format("note: accelerator \"auto\": %s; built for the CPU only\n", why))
    return cpu_dir, nil
  end
  return cpu_dir, cuda.generate(g, cpu_dir .. "/cuda", { precision = opts.precision, spec_hash = spec_hash(g.spec.text),
                                                         accelerator = "auto", cpu_program = "../train", no_fuse = opts.no_fuse, devices = opts.devices })
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

function commands.train(opts, path)
  local cpu_dir, cuda_dir = generate_for_accelerator(path, opts)
  if not cpu_dir and not cuda_dir then return end
  if cpu_dir then compile(cpu_dir) end
  if cuda_dir then compile(cuda_dir) end
  local dir = cuda_dir or cpu_dir
  local args = {}
  for _, a in ipairs(opts.program_args) do args[#args + 1] = "'" .. a:gsub("'", "'\\''") .. "'" end
  io.stdout:flush()
  local ok, how, code = os.execute(string.format("'%s/train' %s", dir, table.concat(args, " ")))
  if ok then return 0 end
  return how == "exit" and code or 1
end

local function run(args)
  local opts = parse_args(args)
  local cmd = opts.positional[1]
  if opts.help or cmd == "help" then io.write(USAGE); return 0 end
  if not cmd then io.stderr:write(USAGE); return 2 end
  local f = commands[cmd]
  if not f then
    local names = {}
    for k in pairs(commands) do names[#names + 1] = k end
    table.sort(names)
    usage_error(string.format("unknown command '%s'%s", cmd, require("util").did_you_mean(cmd, names)))
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
