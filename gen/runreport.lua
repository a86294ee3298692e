-- `loom report RUN_DIR...`: the training curves of one or more runs as one HTML page
-- with SVG plots (no script, nothing fetched from the network), beside each run's
-- hyperparameters.  Reads what the runs' CSVLogger wrote (metrics.csv, hparams.yaml);
-- several runs are overlaid, one colour each, for comparison.
local diag = require "diag"
local loomc = require "loomc"

local runreport = {}

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf" }

-- The plots: a title and the metrics drawn in it (a key ending in '*' is a prefix).
local PLOTS = {
  { title = "training loss (per logged step)", keys = { "train/loss" } },
  { title = "loss per epoch: training (dashed) and validation", keys = { "train/loss_epoch", "val/loss" } },
  { title = "validation accuracy", keys = { "val/acc" } },
  { title = "learning rate", keys = { "lr-*" } },
  { title = "throughput (items/s)", keys = { "train/throughput" } },
  { title = "loss scale (16-mixed)", keys = { "scale" } },
  { title = "gradient norm before clipping", keys = { "train/grad_norm" } },
}

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local t = f:read("a")
  f:close()
  return t
end

-- A CSV text as Python's csv module writes it: { header = {...}, rows = { {...}, ... } }.
local function parse_csv(text, path)
  local records, fields, field, i, n = {}, {}, {}, 1, #text
  local quoted = false
  while i <= n do
    local c = text:sub(i, i)
    if quoted then
      if c == '"' then
        if text:sub(i + 1, i + 1) == '"' then field[#field + 1] = '"'; i = i + 1 else quoted = false end
      else field[#field + 1] = c end
    elseif c == '"' then quoted = true
    elseif c == "," then fields[#fields + 1] = table.concat(field); field = {}
    elseif c == "\n" or c == "\r" then
      if c == "\r" and text:sub(i + 1, i + 1) == "\n" then i = i + 1 end
      fields[#fields + 1] = table.concat(field); field = {}
      records[#records + 1] = fields; fields = {}
    else field[#field + 1] = c end
    i = i + 1
  end
  if #field > 0 or #fields > 0 then fields[#fields + 1] = table.concat(field); records[#records + 1] = fields end
  if #records == 0 then diag.fatal(nil, path .. ": empty, not a metrics.csv") end
  local header = table.remove(records, 1)
  local rows = {}
  for r, rec in ipairs(records) do
    if #rec ~= #header then diag.fatal(nil, string.format("%s: row %d has %d fields, the header %d", path, r + 1, #rec, #header)) end
    local row = {}
    for k, name in ipairs(header) do row[name] = rec[k] end
    rows[#rows + 1] = row
  end
  return { header = header, rows = rows }
end

-- The metrics.csv files of a run: the path itself, DIR/metrics.csv, or every
-- DIR/logs/*/version_*/metrics.csv (the loggers' layout under a run's --out).
local function find_runs(path)
  if path:match("%.csv$") then return { path } end
  if read(path .. "/metrics.csv") then return { path .. "/metrics.csv" } end
  local found = {}
  local function walk(dir, depth)
    local names = loomc.list_dir(dir)
    if not names then return end
    for _, name in ipairs(names) do
      local p = dir .. "/" .. name
      if name == "metrics.csv" then found[#found + 1] = p
      elseif depth < 4 and not name:match("%.") then walk(p, depth + 1) end
    end
  end
  walk(path, 0)
  if #found == 0 then diag.fatal(nil, path .. ": no metrics.csv in it (a run's --out, or a logger's version_N directory)") end
  return found
end

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local function num(s) return string.format("%.6g", s) end

-- One plot: every (run, key) series as a polyline of its (step, value) points.
local function svg(plot, runs)
  local series = {}
  for r, run in ipairs(runs) do
    for _, pattern in ipairs(plot.keys) do
      for _, key in ipairs(run.csv.header) do
        local match = pattern:sub(-1) == "*" and key:sub(1, #pattern - 1) == pattern:sub(1, -2) or key == pattern
        if match then
          local pts = {}
          for _, row in ipairs(run.csv.rows) do
            local v, s = tonumber(row[key]), tonumber(row.step)
            if v and s and v == v and math.abs(v) ~= math.huge then pts[#pts + 1] = { s, v } end
          end
          if #pts > 0 then series[#series + 1] = { run = r, key = key, pts = pts, dashed = key:match("^train/") and #plot.keys > 1 } end
        end
      end
    end
  end
  if #series == 0 then return nil end
  local x0, x1, y0, y1 = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(series) do
    for _, p in ipairs(s.pts) do
      x0, x1 = math.min(x0, p[1]), math.max(x1, p[1])
      y0, y1 = math.min(y0, p[2]), math.max(y1, p[2])
    end
  end
  if x1 == x0 then x0, x1 = x0 - 1, x1 + 1 end
  if y1 == y0 then y0, y1 = y0 - math.abs(y0) * 0.1 - 1e-9, y1 + math.abs(y1) * 0.1 + 1e-9 end
  local W, H, L, R, T, B = 560, 300, 70, 16, 14, 40
  local function X(v) return L + (v - x0) / (x1 - x0) * (W - L - R) end
  local function Y(v) return T + (y1 - v) / (y1 - y0) * (H - T - B) end
  local out = {
    string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" data-plot="%s">', W, H, W, H, esc(plot.title)),
    string.format('<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="#999"/>', L, T, W - L - R, H - T - B),
  }
  for k = 0, 4 do   -- grid and labels: five values on each axis
    local yv, xv = y0 + (y1 - y0) * k / 4, x0 + (x1 - x0) * k / 4
    out[#out + 1] = string.format('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>',
      L, W - R, Y(yv), Y(yv), L - 4, Y(yv) + 4, num(yv))
    out[#out + 1] = string.format('<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>', X(xv), H - B + 16, num(math.floor(xv + 0.5)))
  end
  out[#out + 1] = string.format('<text x="%d" y="%d" font-size="11" text-anchor="middle">step</text>', (L + W - R) // 2, H - 6)
  for _, s in ipairs(series) do
    local coords = {}
    for _, p in ipairs(s.pts) do coords[#coords + 1] = string.format("%.2f,%.2f", X(p[1]), Y(p[2])) end
    local color = COLORS[(s.run - 1) % #COLORS + 1]
    out[#out + 1] = string.format('<polyline data-run="%d" data-key="%s" fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>',
      s.run, esc(s.key), color, s.dashed and ' stroke-dasharray="5,3"' or "", table.concat(coords, " "))
    if #s.pts <= 40 then   -- few points (per-epoch values): mark each
      for _, c in ipairs(coords) do
        local x, y = c:match("([^,]+),(.+)")
        out[#out + 1] = string.format('<circle cx="%s" cy="%s" r="2.5" fill="%s"/>', x, y, color)
      end
    end
  end
  out[#out + 1] = "</svg>"
  return table.concat(out, "\n")
end

-- Writes the page for the runs at `paths` to `out` (default: the first run's
-- directory/report.html).  Returns the file written.
function runreport.write(paths, out)
  local runs = {}
  for _, p in ipairs(paths) do
    for _, csv_path in ipairs(find_runs(p)) do
      local text = read(csv_path) or diag.fatal(nil, csv_path .. ": cannot read")
      local dir = csv_path:match("^(.*)/[^/]*$") or "."
      runs[#runs + 1] = { path = csv_path, dir = dir, csv = parse_csv(text, csv_path), hparams = read(dir .. "/hparams.yaml") }
    end
  end
  out = out or (runs[1].dir .. "/report.html")
  local html = {
    "<!DOCTYPE html>",
    '<html><head><meta charset="utf-8"><title>loom runs</title>',
    "<style>body{font-family:sans-serif;margin:24px;color:#222} .plots{display:flex;flex-wrap:wrap;gap:16px}",
    " figure{margin:0} figcaption{font-size:13px;margin-bottom:4px} table{border-collapse:collapse;font-size:13px}",
    " td,th{border:1px solid #ccc;padding:2px 8px;text-align:left} .swatch{display:inline-block;width:12px;height:12px}</style>",
    "</head><body>",
    string.format("<h1>Training curves: %d run%s</h1>", #runs, #runs == 1 and "" or "s"),
    "<h2>Runs</h2><table><tr><th></th><th>metrics</th><th>rows</th><th>hyperparameters</th></tr>",
  }
  for r, run in ipairs(runs) do
    local hp = {}
    for line in (run.hparams or ""):gmatch("[^\n]+") do hp[#hp + 1] = esc(line) end
    html[#html + 1] = string.format('<tr><td><span class="swatch" style="background:%s"></span> %d</td><td>%s</td><td>%d</td><td>%s</td></tr>',
      COLORS[(r - 1) % #COLORS + 1], r, esc(run.path), #run.csv.rows, #hp > 0 and table.concat(hp, "<br>") or "(no hparams.yaml)")
  end
  html[#html + 1] = "</table>"
  html[#html + 1] = '<h2>Curves</h2><div class="plots">'
  -- train.log's metrics (train/NAME, train/NAME_epoch, val/NAME): one plot each, after
  -- the built-in ones
  local plots, seen, builtin = {}, {}, {}
  for _, plot in ipairs(PLOTS) do
    plots[#plots + 1] = plot
    for _, k in ipairs(plot.keys) do builtin[k] = true end
  end
  local names = {}
  for _, run in ipairs(runs) do
    for _, key in ipairs(run.csv.header) do
      local name = key:match("^train/(.+)_epoch$") or key:match("^val/(.+)$")
      if name and not builtin["train/" .. name .. "_epoch"] and not builtin["val/" .. name] and not seen[name] then
        seen[name] = true
        names[#names + 1] = name
      end
    end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    plots[#plots + 1] = { title = name .. " (train.log): per step and epoch (dashed), validation",
                          keys = { "train/" .. name, "train/" .. name .. "_epoch", "val/" .. name } }
  end
  for _, plot in ipairs(plots) do
    local s = svg(plot, runs)
    if s then html[#html + 1] = string.format("<figure><figcaption>%s</figcaption>\n%s\n</figure>", esc(plot.title), s) end
  end
  html[#html + 1] = "</div></body></html>\n"
  local f, err = io.open(out, "wb")
  if not f then diag.fatal(nil, "cannot write " .. tostring(err)) end
  f:write(table.concat(html, "\n"))
  f:close()
  return out
end

return runreport
