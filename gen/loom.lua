-- loom: the driver.  It only parses the command line and lists the stages;
-- each stage is one module that takes the previous stage's data.
local diag = require "diag"

local loom = {}

local USAGE = [[
usage: loom COMMAND [options] SPEC

commands:
  inspect SPEC            print the model as PyTorch prints it, and its parameters
  explain SPEC [-o DIR]   write DIR/REPORT.md and DIR/REPORT.html (default DIR: build/<spec>)

options:
  --dump=STAGE            print what a stage produced and stop (STAGE: spec, graph)
  -o DIR                  output directory
  -h, --help              this text
]]

local STAGES = { "spec", "graph" }

local function usage_error(msg)
  diag.fatal(nil, msg .. " (loom --help for usage)")
end

local function parse_args(args)
  local opts = { positional = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then opts.help = true
    elseif a == "-o" then
      i = i + 1
      opts.out = args[i] or usage_error("-o needs a directory")
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
  local md = report.markdown(g)
  write(dir .. "/REPORT.md", md)
  write(dir .. "/REPORT.html", report.html(g.model_rec.class .. " — loom report", md))
  io.write(string.format("wrote %s/REPORT.md and %s/REPORT.html\n", dir, dir))
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
  f(opts, opts.positional[2])
  return 0
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
