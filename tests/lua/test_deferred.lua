-- tether.deferred: asynchronous exceptions wait until cleanup finishes.
local tether = require "tether"
local T = require "testlib"

T.case("deferred returns fn's results and passes its arguments", function()
  local a, b, c = tether.deferred(function(x, y) return x + y, "two", nil end, 1, 2)
  assert(a == 3 and b == "two" and c == nil)
  assert(select("#", tether.deferred(function() end)) == 0)
end)

T.case("a cancel waits until the deferred cleanup is done", function()
  local inside, go = tether.event(), tether.event()
  local cleaned, after = false, false
  local t = tether.thread(function()
    tether.deferred(function()
      inside:set()
      go:wait()          -- a wait inside deferred is not interrupted
      for _ = 1, 100000 do end
      cleaned = true
    end)
    after = true         -- never reached: the cancel is raised first
  end)
  assert(inside:wait(T.LIMIT))
  t:cancel()
  go:set()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(cleaned and not after)
end)

T.case("a busy cleanup runs to its end under a cancel", function()
  local inside = tether.event()
  local n = 0
  local t = tether.thread(function()
    tether.deferred(function()
      inside:set()
      for _ = 1, 3000000 do n = n + 1 end
    end)
  end)
  assert(inside:wait(T.LIMIT))
  t:cancel()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled and n == 3000000, n)
end)

T.case("an error leaving deferred carries the held cancel out with it", function()
  local inside, go = tether.event(), tether.event()
  local reached = false
  local t = tether.thread(function()
    pcall(tether.deferred, function()
      inside:set()
      go:wait()
      reached = true
      error("cleanup failed")
    end)
    while true do end -- the held cancel is raised at the first instruction
  end)
  assert(inside:wait(T.LIMIT))
  t:cancel()
  go:set()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(reached)
end)

T.case("the error of deferred code keeps its traceback", function()
  local ok, tb = xpcall(tether.deferred, debug.traceback, function()
    local function inner_cleanup() error("x") end
    inner_cleanup()
  end)
  assert(not ok and tb:find("inner_cleanup", 1, true), tb)
end)

T.case("deferred nests; the cancel lands after the outermost", function()
  local inside, go = tether.event(), tether.event()
  local steps = {}
  local t = tether.thread(function()
    tether.deferred(function()
      tether.deferred(function() inside:set() go:wait() steps[#steps + 1] = "inner" end)
      for _ = 1, 1000 do end
      steps[#steps + 1] = "outer"
    end)
    steps[#steps + 1] = "after"
  end)
  assert(inside:wait(T.LIMIT))
  t:cancel()
  go:set()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled)
  assert(#steps == 2 and steps[1] == "inner" and steps[2] == "outer")
end)

T.case("deferred with nothing pending changes nothing", function()
  for _ = 1, 1000 do tether.deferred(function() end) end
  local t = tether.thread(function() return tether.deferred(function() return "v" end) end)
  local ok, v = t:join()
  assert(ok and v == "v")
end)

T.case("bad arguments", function()
  T.raises("bad argument #1 to 'deferred' (function expected, got nil)",
           function() tether.deferred(nil) end)
end)

T.case("deferred cannot contain a yield, and ends its block on that error", function()
  local co = coroutine.create(function()
    tether.deferred(function() coroutine.yield(1) end)
  end)
  local ok, err = coroutine.resume(co)
  assert(not ok and tostring(err):find("attempt to yield across a C-call boundary", 1, true),
         tostring(err))
  -- Lua closes a dead coroutine's <close> variables (the block's end) only
  -- in coroutine.close; then a raise is delivered again at once
  assert(coroutine.close(co) == false)
  local ok2, err2 = pcall(function()
    tether.current():raise("delivered")
    for _ = 1, 10 do end
  end)
  assert(not ok2 and err2 == "delivered", tostring(err2))
end)

T.done()
