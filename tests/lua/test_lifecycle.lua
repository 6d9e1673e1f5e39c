-- Finalizers and the end of the state: a wait inside a __gc does not
-- block (Lua's collector is stopped for every thread while a finalizer
-- runs), and a finalizer that runs after the runtime was finalized gets
-- clear errors and does not hang.
local tether = require "tether"
local T = require "testlib"

T.case("waits inside a finalizer do not block", function()
  local e = tether.event()
  local q = tether.queue()
  local ch = tether.channel()
  local held = tether.lock()
  local gc_started = false
  -- sets `e`, fills `q` and `ch` once the finalizer has started: a wait
  -- that blocked would see them and succeed
  local helper = tether.thread(function()
    while not gc_started do tether.sleep(0.001) end
    e:set() q:put("late") ch:send("late")
  end)
  held:acquire()
  local r = {}
  do
    setmetatable({}, {__gc = function()
      -- each wait shares the line that starts it with the check before:
      -- no other thread runs in between
      gc_started = true r.wait = e:wait()
      r.get = q:get() r.recv = ch:recv()
      r.sleep_done = pcall(tether.sleep, 1e6)
      r.held = select(2, pcall(held.held, held))
      r.count = collectgarbage("count")
    end})
  end
  collectgarbage()
  collectgarbage()
  held:release()
  assert(helper:join(T.LIMIT))
  assert(r.wait == false, tostring(r.wait))
  assert(r.get == nil and r.recv == nil, tostring(r.get) .. " " .. tostring(r.recv))
  assert(r.sleep_done == true)
  assert(tostring(r.held):find("finalizer does not block", 1, true), tostring(r.held))
  assert(r.count == nil) -- Lua's own sign that the collector is stopped
  assert(collectgarbage("count") > 0)
end)

T.case("a join inside a finalizer does not block", function()
  local go = tether.event()
  local t = tether.thread(function() go:wait() return 1 end)
  local r
  do setmetatable({}, {__gc = function() r = table.pack(t:join()) end}) end
  collectgarbage()
  collectgarbage()
  go:set()
  assert(r and r[1] == nil and r[2] == "timeout", tostring(r and r[1]))
  assert(t:join(T.LIMIT))
end)

T.case("require inside a finalizer does not wait for another thread's loader", function()
  -- A thread loads `slow_in_gc`, whose loader waits for `go`; a helper sets
  -- `go` once the finalizer has started, so a require that blocked in the
  -- finalizer would get the module (it blocked, and stopped the collector
  -- of every thread meanwhile); it must raise at once instead.
  local go, loading = tether.event(), tether.event()
  package.preload.slow_in_gc = function() loading:set() go:wait() return {} end
  local loader = tether.thread(function() return require "slow_in_gc" end)
  assert(loading:wait(T.LIMIT))
  local gc_started = false
  local helper = tether.thread(function()
    while not gc_started do tether.sleep(0.001) end
    go:set()
  end)
  local r
  do
    setmetatable({}, {__gc = function()
      gc_started = true r = table.pack(pcall(require, "slow_in_gc"))
    end})
  end
  collectgarbage()
  collectgarbage()
  assert(helper:join(T.LIMIT))
  local ok, m = loader:join(T.LIMIT)
  assert(ok and type(m) == "table")
  assert(r and r[1] == false, "require waited in the finalizer: " .. tostring(r and r[2]))
  assert(tostring(r[2]):find("finalizer does not block", 1, true), tostring(r[2]))
  assert(require "slow_in_gc" == m) -- and outside a finalizer it is the module
end)

T.case("a finalizer after the runtime was finalized gets clear errors", function()
  local status, out = T.run_lua([[
    local tether = require "tether"
    local q = tether.queue()
    local ch = tether.channel()
    local late = setmetatable({}, {__gc = function()
      print("thread", pcall(tether.thread, function() end))
      print("get", q:get())
      print("recv", ch:recv())
      print("finalizer done")
    end})
    local newest = tether.lock() -- the closing sentinel is newer than `late`
  ]])
  assert(status == 0, out)
  assert(out:find("thread\tfalse\tthread: the Lua state is closing: tether's runtime is finalized", 1, true), out)
  assert(out:find("get\tnil\ttimeout", 1, true), out)
  assert(out:find("recv\tnil\ttimeout", 1, true), out)
  assert(out:find("finalizer done", 1, true), out)
end)

T.case("a finished thread's coroutine is dead", function()
  local t = tether.thread(function(x) return coroutine.running(), x, "more" end, 42)
  local ok, co, x, more = t:join(T.LIMIT)
  assert(ok and type(co) == "thread" and x == 42 and more == "more")
  assert(coroutine.status(co) == "dead", coroutine.status(co))
  local ok2, err = coroutine.resume(co)
  assert(not ok2 and err == "cannot resume dead coroutine", tostring(err))
  local again = table.pack(t:join())
  assert(again.n == 4 and again[1] and again[3] == 42) -- join still gives them
  local t2 = tether.thread(function() local co2 = coroutine.running() error({co = co2}) end)
  local ok3, err3 = t2:join(T.LIMIT)
  assert(not ok3 and coroutine.status(err3.co) == "dead")
end)

T.case("a thread that survives an error its handler saw keeps no traceback", function()
  -- Lua runs the thread's message handler for a `load` reader's error too
  local function tracebacks()
    local n = 0
    for k, v in pairs(debug.getregistry()) do
      if type(k) == "userdata" and type(v) == "string" and v:find("traceback", 1, true) then
        n = n + 1
      end
    end
    return n
  end
  local before = tracebacks()
  for _ = 1, 20 do
    assert(tether.thread(function() load(function() error("x") end) return 1 end):join(T.LIMIT))
  end
  assert(tracebacks() == before, tracebacks() - before .. " tracebacks left")
end)

T.done()
