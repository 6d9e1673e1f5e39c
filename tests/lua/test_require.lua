-- require from many threads at once: one loader run per module name, the
-- others wait; a loader error or a cycle between threads does not
-- deadlock; require's own behaviour is unchanged (issue 13, D6).
local tether = require "tether"
local T = require "testlib"

local N = 8

-- A module directory of our own on package.path.
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir " .. dir))
package.path = dir .. "/?.lua;" .. package.path
local function module(name, body)
  local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
  f:write(body)
  f:close()
end

-- Starts N threads that each call fn and waits for them; returns their
-- join results, in order.
local function in_threads(fn)
  local go = tether.event()
  local ts = {}
  for i = 1, N do ts[i] = tether.thread(function() go:wait() return fn(i) end) end
  go:set()
  local r = {}
  for i = 1, N do r[i] = table.pack(ts[i]:join(T.LIMIT)) end
  return r
end

-- The body sleeps, so the GIL surely changes hands while it runs: without
-- the lock every thread ran it and got a table of its own.
T.case("a pure-Lua module required by " .. N .. " threads at once runs once", function()
  RUNS_SLOW = 0
  module("slow", [[
    RUNS_SLOW = RUNS_SLOW + 1
    local M = {id = RUNS_SLOW}
    require("tether").sleep(0.02)
    for i = 1, 1000 do M[i] = i end
    return M
  ]])
  local r = in_threads(function() local m, where = require "slow" return m, where end)
  local first = r[1][2]
  for i = 1, N do
    assert(r[i][1] == true, tostring(r[i][2]))
    assert(rawequal(r[i][2], first), "thread " .. i .. " got another module table")
  end
  assert(RUNS_SLOW == 1, "the module body ran " .. RUNS_SLOW .. " times")
  assert(rawequal(package.loaded.slow, first) and first[1000] == 1000)
  assert(require "slow" == first)
end)

T.case("a loader that fails: every thread gets the error, none hangs", function()
  RUNS_BAD = 0
  module("bad", [[
    RUNS_BAD = RUNS_BAD + 1
    require("tether").sleep(0.01)
    error("bad module, run " .. RUNS_BAD)
  ]])
  local r = in_threads(function() return pcall(require, "bad") end)
  for i = 1, N do
    assert(r[i][1] == true and r[i][2] == false, tostring(r[i][3]))
    assert(tostring(r[i][3]):find("bad module, run", 1, true), tostring(r[i][3]))
  end
  -- The waiters each try again after a failure, one at a time.
  assert(RUNS_BAD == N, RUNS_BAD)
  assert(package.loaded.bad == nil)
end)

T.case("a loader that fails once: the threads that waited load it", function()
  RUNS_FLAKY = 0
  module("flaky", [[
    RUNS_FLAKY = RUNS_FLAKY + 1
    require("tether").sleep(0.01)
    if RUNS_FLAKY == 1 then error("first run fails") end
    return {run = RUNS_FLAKY}
  ]])
  local r = in_threads(function() return pcall(require, "flaky") end)
  local failed, got = 0, nil
  for i = 1, N do
    assert(r[i][1] == true)
    if r[i][2] then
      got = got or r[i][3]
      assert(rawequal(r[i][3], got), "two module tables")
    else
      failed = failed + 1
    end
  end
  assert(failed == 1 and RUNS_FLAKY == 2 and got.run == 2, failed .. " " .. RUNS_FLAKY)
end)

T.case("a cycle between two threads does not deadlock", function()
  module("cyc_a", [[
    local M = {}
    package.loaded[...] = M
    require("tether").sleep(0.05)
    M.b = require "cyc_b"
    return M
  ]])
  module("cyc_b", [[
    local M = {}
    package.loaded[...] = M
    require("tether").sleep(0.05)
    M.a = require "cyc_a"
    return M
  ]])
  local go = tether.event()
  local ta = tether.thread(function() go:wait() return require "cyc_a" end)
  local tb = tether.thread(function() go:wait() return require "cyc_b" end)
  go:set()
  local oka, a = ta:join(T.LIMIT)
  local okb, b = tb:join(T.LIMIT)
  assert(oka ~= nil and okb ~= nil, "deadlocked")
  assert(oka and okb, tostring(a) .. " " .. tostring(b))
  assert(type(a) == "table" and type(b) == "table")
  assert(type(a.b) == "table" and type(b.a) == "table")
end)

T.case("a module that requires itself (in one thread) works as in plain Lua", function()
  module("selfreq", "package.loaded[...] = 25; return require(...)")
  assert(require "selfreq" == 25)
  module("nested_outer", "return {inner = require 'nested_inner'}")
  module("nested_inner", "return {x = 1}")
  local r = in_threads(function() return require "nested_outer" end)
  for i = 1, N do
    assert(r[i][1] and r[i][2].inner.x == 1)
    assert(rawequal(r[i][2], r[1][2]) and rawequal(r[i][2].inner, package.loaded.nested_inner))
  end
end)

T.case("a cancel while waiting for another thread's load", function()
  module("held", [[
    HELD_GO:wait()
    return {"held"}
  ]])
  HELD_GO = tether.event()
  local loading = tether.thread(function() return require "held" end)
  T.wait_for(function() return package.loaded.held == nil and loading:alive() end)
  tether.sleep(0.01)
  local waiter = tether.thread(function() return require "held" end)
  tether.sleep(0.01)
  assert(waiter:cancel())
  local ok, err = waiter:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  HELD_GO:set()
  local ok2, m = loading:join(T.LIMIT)
  assert(ok2 and m[1] == "held")
  local late = tether.thread(function() return require "held" end)
  local ok3, m3 = late:join(T.LIMIT)
  assert(ok3 and rawequal(m3, m))
end)

T.case("require's results and messages are the standard ones", function()
  module("plain", "return {...}")
  local m, where = require "plain"
  assert(m[1] == "plain" and m[2] == where and where == dir .. "/plain.lua", tostring(where))
  assert(select("#", require "plain") == 1) -- loaded already: the module alone
  local ok, msg = pcall(require, "no-such-module")
  assert(not ok and msg:find("^module 'no%-such%-module' not found:\n\tno field package.preload%['no%-such%-module'%]\n\tno file "), msg)
  T.raises("bad argument #1 to 'require' (string expected, got no value)", require)
  package.preload.pre = function(name, extra) return {name, extra} end
  local p, extra = require "pre"
  assert(p[1] == "pre" and p[2] == ":preload:" and extra == ":preload:")
  module("nothing", "x_nothing = true")
  assert(require "nothing" == true and package.loaded.nothing == true)
  assert(require "tether" == tether and require "string" == string)
  -- a number is a name, as in plain Lua
  package.preload["42"] = function() return "forty-two" end
  assert(require(42) == "forty-two")
end)

T.case("interpreter threads requiring at once", function()
  module("slow_i", [[
    RUNS_I = (RUNS_I or 0) + 1
    require("tether").sleep(0.02)
    return {id = RUNS_I}
  ]])
  local i = tether.interp()
  local ts = {}
  for k = 1, 4 do
    ts[k] = i:thread(function(path)
      package.path = path
      return require("slow_i").id
    end, package.path)
  end
  for k = 1, 4 do
    local ok, id = ts[k]:join(T.LIMIT)
    assert(ok and id == 1, tostring(id))
  end
  assert(i:close(T.LIMIT))
end)

os.execute("rm -rf " .. dir)
T.done()
