-- tether/lua.h: a third-party C module (capi_test.c, built by the suite
-- and linked to nothing of tether) releases the GIL around its blocking
-- calls, is woken by cancel, and works without tether loaded.  No timing
-- is asserted: concurrency shows as callers inside the call at once.
local T = require "testlib"
local tether = require "tether"
local c = require "capi_test"

T.case("the table is in the registry, version 1", function()
  assert(c.api_version() == 1, tostring(c.api_version()))
end)

T.case("without tether the calls run directly, holding what the caller holds", function()
  local status, out = T.run_lua([[
    local c = require "capi_test"
    assert(c.api_version() == nil)
    assert(c.barrier(1, 1) == true)
    assert(c.barrier_macro(1, 1) == true)
    c.reset()
    assert(c.wait_wake(0.01) == "timeout")
    print("plain ok")
  ]])
  assert(status == 0 and out:find("plain ok", 1, true), out)
end)

local function all_inside(fn, n)
  c.reset()
  local ts = {}
  for i = 1, n do ts[i] = tether.thread(fn, n, T.LIMIT) end
  for i = 1, n do
    local ok, inside = ts[i]:join()
    assert(ok and inside == true, "thread " .. i .. " was not inside with the others")
  end
end

T.case("call_blocking releases the GIL: 4 threads are inside at once", function()
  all_inside(c.barrier, 4)
end)

T.case("the macros release the GIL: 4 threads are inside at once", function()
  all_inside(c.barrier_macro, 4)
end)

T.case("cancel wakes a call through its unblock function", function()
  c.reset()
  local calls = c.ubf_calls()
  local t = tether.thread(function() c.wait_wake(T.LIMIT * 3) end)
  T.wait_for(function() return c.inside() == 1 end, "the call")
  t:cancel()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(c.last() == "woken", c.last())
  assert(c.ubf_calls() == calls + 1)
end)

T.case("raise wakes it too, and the value is raised after the C function returned", function()
  c.reset()
  local t = tether.thread(function() c.wait_wake(T.LIMIT * 3) end)
  T.wait_for(function() return c.inside() == 1 end, "the call")
  t:raise("boom")
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "boom", tostring(err))
  assert(c.last() == "woken", c.last())
end)

T.case("an exception that arrived with the GIL released stops the next call before it runs", function()
  c.reset()
  local t = tether.thread(function() c.hold("wait") end)
  T.wait_for(function() return c.inside() == 1 end, "hold")
  t:raise("early")
  c.go()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "early", tostring(err))
  assert(c.last() == "not run", c.last())
end)

T.case("checkpoint raises what arrived meanwhile in the C function", function()
  c.reset()
  local t = tether.thread(function() c.hold("checkpoint") end)
  T.wait_for(function() return c.inside() == 1 end, "hold")
  t:raise("now")
  c.go()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "now", tostring(err))
  assert(c.last() == "holding", c.last())
end)

T.case("the main thread's calls are woken too", function()
  c.reset()
  local main = tether.current()
  local t = tether.thread(function()
    T.wait_for(function() return c.inside() == 1 end, "the call")
    main:raise("to main")
  end)
  local ok, err = pcall(c.wait_wake, T.LIMIT * 3)
  assert(t:join(T.LIMIT))
  assert(not ok and err == "to main", tostring(err))
  assert(c.last() == "woken", c.last())
end)

T.case("without a checkpoint the exception waits for the next line", function()
  c.reset()
  local t = tether.thread(function()
    c.hold("nothing")
    return "the next line ran"
  end)
  T.wait_for(function() return c.inside() == 1 end, "hold")
  t:raise("next line")
  c.go()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "next line", tostring(err))
  assert(c.last() == "holding", c.last())
end)

T.case("called with the GIL released or on a foreign thread, the functions run fn or do nothing", function()
  -- A C module that caches the table and calls it where it must not:
  -- inside its own blocking call, and on a thread of its own.  call_blocking
  -- runs fn directly (TETHER_LUA_RAN), save/restore/checkpoint do nothing;
  -- nothing raises across C frames that are not Lua's.
  for _, where in ipairs({"nested", "foreign"}) do
    local report = c.misuse(where)
    assert(report == "rc=0 runs=1 result=7", where .. ": " .. report)
    local t = tether.thread(function() return c.misuse(where) end)
    local ok, r = t:join(T.LIMIT)
    assert(ok and r == "rc=0 runs=1 result=7", where .. " in a thread: " .. tostring(r))
  end
end)

T.case("in a finalizer the GIL is kept and the call still runs", function()
  c.reset()
  local got
  setmetatable({}, {__gc = function() got = c.barrier(1, 1) end})
  collectgarbage()
  collectgarbage()
  assert(got == true)
end)

T.case("threads of another interpreter find the table of their own state", function()
  local i = tether.interp()
  local t = i:thread(function()
    local c = require "capi_test"
    return c.api_version(), c.barrier_macro(1, 1)
  end)
  local ok, v, b = t:join(T.LIMIT)
  assert(ok and v == 1 and b == true, tostring(v))
  i:close()
end)

T.done()
