-- tether.trace(path) / tether.trace(): a GIL timeline from a script
-- (docs/tracing.md; the JSON is validated by tests/trace/check_trace.py).
local tether = require "tether"
local T = require "testlib"

local dir = os.tmpname()
os.remove(dir)
local function path(name) return dir .. "-" .. name end

local function slurp(p)
  local f = assert(io.open(p))
  local s = f:read("a")
  f:close()
  os.remove(p)
  return s
end

T.case("a trace names Lua threads after their tether.thread names", function()
  local p = path("names.json")
  assert(tether.trace(p) == true)
  local ts = {}
  for i = 1, 3 do
    ts[i] = tether.thread({name = "worker-" .. i}, function()
      local x = 0
      for k = 1, 200000 do x = x + k end
      tether.sleep(0.001)
      return x
    end)
  end
  for i = 1, 3 do assert(ts[i]:join(T.LIMIT)) end
  assert(tether.trace() == true)
  local s = slurp(p)
  for i = 1, 3 do
    assert(s:find('"name":"worker-' .. i .. '"', 1, true), "no track worker-" .. i)
    assert(s:find('"join worker-' .. i .. '"', 1, true), "no join of worker-" .. i)
  end
  assert(s:find('"name":"main"', 1, true))
  assert(s:find('"thread start"', 1, true))
  assert(s:find('"traceEvents"', 1, true))
end)

T.case("bad use raises a clear error and changes nothing", function()
  T.raises("no trace records", tether.trace)
  T.raises("cannot open", tether.trace, "/nonexistent-dir/x/trace.json")
  local p = path("twice.json")
  tether.trace(p)
  T.raises("already records", tether.trace, path("other.json"))
  assert(io.open(path("other.json")) == nil)
  tether.trace()
  slurp(p)
  T.raises("no trace records", tether.trace)
  -- A zero byte would cut the path short: refused, nothing opened.
  T.raises("zero byte", tether.trace, path("zero") .. "\0.json")
  assert(io.open(path("zero")) == nil)
  T.raises("no trace records", tether.trace)
  T.raises("string expected", tether.trace, {})
  T.raises("the path is empty", tether.trace, "")
end)

T.done()
