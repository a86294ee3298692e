-- template: fills ${name} holes in the files under templates/.  A hole with no
-- value and a value that no hole uses are both errors (loom's own bugs), so a
-- template and its filler cannot drift apart silently.
local template = {}

-- The text of a file shipped inside loom (templates/, runtime/); from disk when
-- LOOM_GEN_DIR points at a checkout's gen/ (developing).
function template.source(path)
  local dir = os.getenv("LOOM_GEN_DIR")
  if dir and dir ~= "" then
    local f = io.open(dir .. "/../" .. path, "rb")
    if f then
      local text = f:read("a")
      f:close()
      return text
    end
  end
  local text = require("loomc").embedded(path)
  assert(text, "no embedded file " .. path)
  return text
end

function template.fill(path, values)
  local text = template.source(path)
  local used = {}
  local out = text:gsub("%${([%w_]+)}", function(name)
    local v = values[name]
    assert(v ~= nil, path .. ": no value for ${" .. name .. "}")
    used[name] = true
    return tostring(v)
  end)
  for name in pairs(values) do
    assert(used[name], path .. ": value '" .. name .. "' fills no hole")
  end
  return out
end

return template
