-- tether.atexit_timeout: the shutdown policy for non-daemon threads at the
-- end of a script.  Each case runs a child lua5.4 and looks at what it
-- printed and how it exited (no timing is asserted).
local T = require "testlib"
local tether = require "tether"

local function child(code)
  return T.run_lua('local tether = require "tether"\n' .. code)
end

T.case("atexit_timeout reads and sets the policy", function()
  assert(tether.atexit_timeout() == nil, "no limit by default")
  assert(tether.atexit_timeout(2.5) == 2.5)
  assert(tether.atexit_timeout() == 2.5)
  assert(tether.atexit_timeout(0) == 0)
  assert(tether.atexit_timeout(math.huge) == nil)
  tether.atexit_timeout(3)
  T.raises("non-negative", tether.atexit_timeout, -1)
  T.raises("non-negative", tether.atexit_timeout, 0 / 0)
  T.raises("number expected", tether.atexit_timeout, "soon")
  T.raises("number expected", tether.atexit_timeout, nil)
  assert(tether.atexit_timeout() == 3, "bad input changed nothing")
  tether.atexit_timeout(math.huge)
end)

T.case("threads that end in time are joined as without a policy", function()
  local status, out = child(("tether.atexit_timeout(%d)\n"):format(T.LIMIT) .. [[
    tether.thread(function() tether.sleep(0.05) print("worker done") end)
  ]])
  assert(status == 0, out)
  assert(out:find("worker done", 1, true), out)
  assert(not out:find("abandoned", 1, true), out)
end)

T.case("a busy thread still running after the timeout is cancelled", function()
  local status, out = child([[
    tether.atexit_timeout(0.05)
    local go = tether.event()
    tether.thread({name = "spin"}, function()
      local ok, err = pcall(function() go:set() while true do end end)
      print("spin ended, cancelled: " .. tostring(err == tether.Cancelled))
      error(err, 0)
    end)
    go:wait()
    print("main ends")
  ]])
  assert(status == 0, out)
  assert(out:find("main ends", 1, true), out)
  assert(out:find("spin ended, cancelled: true", 1, true), out)
  assert(not out:find("abandoned", 1, true), out)
end)

T.case("a thread blocked in a wait is cancelled out of it", function()
  local status, out = child([[
    tether.atexit_timeout(0)
    local q, go = tether.queue(), tether.event()
    tether.thread(function()
      local ok, err = pcall(function() go:set() q:get() end)
      print("get ended, cancelled: " .. tostring(err == tether.Cancelled))
    end)
    go:wait()
  ]])
  assert(status == 0, out)
  assert(out:find("get ended, cancelled: true", 1, true), out)
end)

T.case("a thread that holds cancellation back is abandoned with a warning", function()
  local status, out = child([[
    tether.atexit_timeout(0.05)
    local go = tether.event()
    tether.thread({name = "stubborn"}, function()
      tether.deferred(function() go:set() while true do end end)
    end)
    go:wait()
    print("main ends")
  ]])
  assert(status == 0, out)
  assert(out:find("main ends", 1, true), out)
  assert(out:find("abandoned: 'stubborn'", 1, true), out)
end)

T.case("threads of other interpreters are stopped after the timeout", function()
  local status, out = child([[
    tether.atexit_timeout(0.05)
    local i = tether.interp()
    local ch = tether.channel()
    i:thread(function(ch) ch:send("up") require("tether").sleep(1e6) end, ch)
    assert(ch:recv() == "up")
    print("main ends")
  ]])
  assert(status == 0, out)
  assert(out:find("main ends", 1, true), out)
end)

T.done()
