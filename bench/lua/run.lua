-- run.lua - runs the Lua benchmarks, each in a fresh lua5.4, and prints a
-- table against the targets of issue 5.
--
--   LUA_CPATH='build/rel/bindings/lua/?.so;;' lua5.4 bench/lua/run.lua [--smoke] [--out FILE]
--
-- --smoke runs tiny counts (a check that everything runs, no verdicts);
-- --out writes the result lines (JSON objects, one a line) to FILE.
-- TETHER_LUA names the interpreter (default lua5.4).  Build tether.so
-- optimised (the release preset) for meaningful numbers.

local dir = arg[0]:match("^(.*)/[^/]*$") or "."
local lua = os.getenv("TETHER_LUA") or "lua5.4"
local smoke, out_path = false, nil
do
  local i = 1
  while arg[i] do
    if arg[i] == "--smoke" then smoke = true
    elseif arg[i] == "--out" then i = i + 1 out_path = arg[i]
    else error("usage: run.lua [--smoke] [--out FILE]") end
    i = i + 1
  end
end

local results = {}

-- Runs one benchmark script and returns its parsed result lines.
local function run(script, ...)
  local args = table.concat({...}, " ")
  local cmd = string.format("LUA_PATH='%s/?.lua;;' %s %s/%s %s", dir, lua, dir, script, args)
  local p = assert(io.popen(cmd, "r"))
  local got = {}
  for line in p:lines() do
    local json = line:match("^RESULT (.*)$")
    if json then
      local r = {}
      for k, v in json:gmatch('"([%w_]+)":("?[^,"}]*"?)') do
        r[k] = v:match('^"(.*)"$') or tonumber(v)
      end
      r.json = json
      got[#got + 1] = r
    else
      io.stderr:write(line, "\n")
    end
  end
  assert(p:close(), script .. " failed")
  return got
end

local function collect(rs)
  for _, r in ipairs(rs) do results[#results + 1] = r end
end

local n = smoke and 20 or nil
collect(run("b_spawn.lua", n or 2000))
collect(run("b_cancel_busy.lua", n or 300))
collect(run("b_cancel_blocked.lua", n or 300))
collect(run("b_pingpong.lua", n or 5000))
collect(run("b_interp.lua", n or 5000, smoke and 100000 or 10000000, smoke and 1 or 3))
collect(run("b_io.lua", smoke and 1 or 5, smoke and 10 or 200, smoke and 0.1 or 1))
collect(run("b_executor.lua", n or 2000))
collect(run("b_io_priority.lua", smoke and 1 or 5))
collect(run("b_socket.lua", smoke and 2 or 20))

-- The overhead: plain and tether in alternation, every round pooled.
local rounds, pairs_ = smoke and 1 or 5, smoke and 1 or 5
local pooled = {}
for _ = 1, pairs_ do
  for _, mode in ipairs({"plain", "tether"}) do
    for _, r in ipairs(run("b_overhead.lua", mode, rounds)) do
      pooled[r.name] = pooled[r.name] or {plain = {}, tether = {}}
      table.insert(pooled[r.name][mode], r.median)
    end
  end
end

-- Single-thread I/O (issue 18): Lua's io library and the module's, in
-- alternation, over one file made by the first run.
local io_file = os.tmpname()
local io_pooled = {}
for _ = 1, pairs_ do
  for _, mode in ipairs({"plain", "tether"}) do
    for _, r in ipairs(run("b_io_single.lua", mode, rounds, io_file, smoke and 1 or 100)) do
      io_pooled[r.name] = io_pooled[r.name] or {plain = {}, tether = {}}
      table.insert(io_pooled[r.name][mode], r.median)
    end
  end
end
os.remove(io_file)

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local lines = {}
-- `higher`: the value must be at least the target (a speedup).
local function row(name, value, unit, target, note, higher)
  local verdict = "-"
  if target and not smoke then
    verdict = (higher and value >= target or not higher and value <= target) and "pass" or "MISS"
  end
  lines[#lines + 1] = string.format("%-26s %12.3f %-6s %10s  %-5s %s", name, value, unit,
                                    target and string.format("%s %g", higher and ">=" or "<=", target) or "",
                                    verdict, note or "")
end

for _, r in ipairs(results) do
  row(r.name, r.median, r.unit, r.target, string.format("(min %.1f, p90 %.1f, n %d)", r.min, r.p90, r.n),
      r.better == "higher")
  -- A benchmark with a floor measured in the same run: the ratio to it,
  -- which compares across machines where absolute times do not.
  if r.floor and r.ratio then
    row(r.name .. ".floor_ratio", r.ratio, "x", nil,
        string.format("(floor median %.1f %s)", r.floor, r.unit))
  end
end
local names = {}
for name in pairs(pooled) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  local p, t = median(pooled[name].plain), median(pooled[name].tether)
  local ratio = t / p
  local target = name ~= "lua.overhead.coros" and 1.03 or nil
  row(name .. ".ratio", ratio, "x", target, string.format("(plain %.3f s, tether %.3f s)", p, t))
  results[#results + 1] = {json = string.format(
    '{"name":"%s.ratio","unit":"x","median":%.4f,"plain":%.6f,"tether":%.6f%s}',
    name, ratio, p, t, target and ',"target":1.03' or "")}
end

names = {}
for name in pairs(io_pooled) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  local p, t = median(io_pooled[name].plain), median(io_pooled[name].tether)
  local ratio = t / p
  row(name .. ".ratio", ratio, "x", 1.05, string.format("(plain %.3f s, tether %.3f s)", p, t))
  results[#results + 1] = {json = string.format(
    '{"name":"%s.ratio","unit":"x","median":%.4f,"plain":%.6f,"tether":%.6f,"target":1.05}',
    name, ratio, p, t)}
end

print(string.format("%-26s %12s %-6s %10s  %-5s", "benchmark", "median", "unit", "target", "verdict"))
for _, l in ipairs(lines) do print(l) end

if out_path then
  local f = assert(io.open(out_path, "w"))
  for _, r in ipairs(results) do f:write(r.json, "\n") end
  f:close()
end
