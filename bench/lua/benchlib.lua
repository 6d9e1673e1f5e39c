-- benchlib.lua - what the Lua benchmarks share: statistics and the result
-- line every benchmark prints.
--
-- A result line is "RESULT " followed by one JSON object:
--   RESULT {"name":"lua.spawn_join","unit":"us","median":41.2,"min":..,
--           "p90":..,"n":2000,"target":60}
-- run.lua collects them; the bench harness can parse them the same way.

local B = {}

-- Sorted copy of a sample array.
local function sorted(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  return s
end

-- The q-quantile (0..1) of a sorted array.
local function quantile(s, q)
  local i = math.max(1, math.min(#s, math.floor(q * (#s - 1) + 1.5)))
  return s[i]
end

-- Summary statistics of samples (any unit).
function B.stats(xs)
  local s = sorted(xs)
  local sum = 0
  for i = 1, #s do sum = sum + s[i] end
  return {n = #s, min = s[1], median = quantile(s, 0.5), p90 = quantile(s, 0.9),
          max = s[#s], mean = sum / #s}
end

local function json_value(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return math.type(v) == "integer" and tostring(v) or string.format("%.6g", v)
  elseif type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif type(v) == "boolean" then
    return tostring(v)
  end
  return "null"
end

-- Encodes a flat table as a JSON object, keys sorted.
function B.json(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = json_value(k) .. ":" .. json_value(t[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Prints the result line of a benchmark: samples in `unit`, an optional
-- target (the median must be at most this) and extra fields.
function B.report(name, unit, samples, target, extra)
  local st = B.stats(samples)
  local r = {name = name, unit = unit, n = st.n, min = st.min, median = st.median,
             p90 = st.p90, max = st.max, mean = st.mean, target = target}
  for k, v in pairs(extra or {}) do r[k] = v end
  print("RESULT " .. B.json(r))
  io.stdout:flush()
  return st
end

-- The iteration count: the first script argument, else `default`; the
-- smoke runs pass a small one.
function B.count(default)
  return tonumber(arg and arg[1]) or default
end

return B
