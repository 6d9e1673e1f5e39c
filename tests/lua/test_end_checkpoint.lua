-- test_end_checkpoint.lua - the end of a tether.thread is a checkpoint
-- (issue 18): an asynchronous exception that arrives while the thread runs
-- its last line is raised there, in place of the results, and join reports
-- it; it is never lost with a join that says the thread succeeded.
--
-- No sleeps order anything here.  An exception posted by the thread to
-- itself on its last line is the deterministic case: after the call that
-- posts it, the line has nothing left that would deliver it (no other
-- line, no call, no wait) but the return.

local T = require "testlib"
local tether = require "tether"

T.case("t:raise(v) posted on the last line: join reports v", function()
  local t = tether.thread(function()
    return "results", tether.current():raise("late")
  end)
  local ok, err, tb = t:join(T.LIMIT)
  assert(ok == false, "join reported success: " .. tostring(err))
  assert(err == "late", tostring(err))
  assert(type(tb) == "string", type(tb))
  assert(t:status() == "error", t:status())
end)

T.case("a raised table value comes back as the same value", function()
  local v = {}
  local t = tether.thread(function() return tether.current():raise(v) end)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == v, tostring(err))
end)

T.case("t:cancel() on the last line: the thread ends cancelled", function()
  local t = tether.thread(function() return 1, tether.current():cancel() end)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(t:status() == "cancelled", t:status())
end)

T.case("a cancel from another thread that the thread caught and returned from", function()
  -- Cancellation is level-triggered: the thread stays cancelled until it
  -- ends, and its end is a checkpoint, so it ends cancelled even though it
  -- swallowed the first Cancelled and reached no other checkpoint.
  local ready, go = tether.event(), tether.event()
  local t = tether.thread(function()
    local ok, err = pcall(function() ready:set() go:wait() end)
    assert(not ok and err == tether.Cancelled)
    return "swallowed"
  end)
  assert(ready:wait(T.LIMIT))
  assert(t:cancel() == true)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(ok) .. " " .. tostring(err))
  assert(t:status() == "cancelled", t:status())
end)

T.case("a raise that was caught stays caught: the thread's results stand", function()
  local ready, go = tether.event(), tether.event()
  local t = tether.thread(function()
    local ok, err = pcall(function() ready:set() go:wait() end)
    assert(not ok and err == "once")
    return "survived"
  end)
  assert(ready:wait(T.LIMIT))
  assert(t:raise("once") == true)
  local ok, v = t:join(T.LIMIT)
  assert(ok == true and v == "survived", tostring(v))
end)

T.case("a thread that ended answers false to raise and cancel", function()
  local t = tether.thread(function() return 1 end)
  assert(t:join(T.LIMIT) == true)
  assert(t:raise("too late") == false)
  assert(t:cancel() == false)
  assert(t:status() == "done", t:status())
end)

T.case("inside tether.deferred the end still delivers what was held", function()
  local t = tether.thread(function()
    return tether.deferred(function() tether.current():raise("held") return 1 end)
  end)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "held", tostring(err))
end)

T.case("i:thread: the end of a thread of another interpreter too", function()
  local i = tether.interp()
  local t = i:thread(function()
    local tether = require "tether"
    return "results", tether.current():raise("late")
  end)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "late", tostring(ok) .. " " .. tostring(err))
  assert(t:status() == "error", t:status())
  t = i:thread(function()
    local tether = require "tether"
    return "results", tether.current():cancel()
  end)
  ok, err = t:join(T.LIMIT)
  assert(ok == false and t:status() == "cancelled", tostring(err))
  i:close()
end)

T.done()
