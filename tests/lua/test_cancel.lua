-- Cancellation and t:raise: a pure-Lua busy loop, each kind of blocked
-- wait, a thread inside a coroutine, pcall, the main thread, self.
local tether = require "tether"
local T = require "testlib"

-- Asserts that t ends cancelled.
local function assert_cancelled(t)
  local ok, err, tb = t:join(T.LIMIT)
  assert(ok == false, "the thread was not cancelled: " .. tostring(ok) .. " " .. tostring(err))
  assert(err == tether.Cancelled, tostring(err))
  assert(type(tb) == "string")
  assert(t:status() == "cancelled", t:status())
end

-- Starts fn in a thread that sets `ready` just before it blocks, cancels
-- it, and checks that it ended cancelled.  Whether the cancel lands before
-- or during the wait, the wait must raise it.
local function cancel_blocked(fn)
  local ready = tether.event()
  local t = tether.thread(function() ready:set() fn() return "not cancelled" end)
  assert(ready:wait(T.LIMIT))
  tether.sleep(0.01) -- usually lets it block; correctness does not depend on it
  assert(t:cancel() == true)
  assert_cancelled(t)
end

T.case("cancel a pure-Lua busy loop", function()
  local ready = tether.event()
  local t = T.spinner(ready)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  assert_cancelled(t)
end)

T.case("cancel a busy loop that never calls anything", function()
  local go = false
  local t = tether.thread(function() go = true while true do end end)
  T.wait_for(function() return go end)
  t:cancel()
  assert_cancelled(t)
end)

T.case("cancel a thread blocked in sleep", function()
  cancel_blocked(function() tether.sleep(1e6) end)
end)

T.case("cancel a thread blocked in join", function()
  local never = tether.event()
  local other = tether.thread(function() never:wait() end)
  cancel_blocked(function() other:join() end)
  never:set()
  assert(other:join())
end)

T.case("cancel a thread blocked in lock:acquire", function()
  local l = tether.lock()
  l:acquire()
  cancel_blocked(function() l:acquire() end)
  l:release()
end)

T.case("cancel a thread blocked in rlock:acquire", function()
  local r = tether.rlock()
  r:acquire()
  cancel_blocked(function() r:acquire() end)
  r:release()
  assert(not r:locked())
end)

T.case("cancel a thread blocked in event:wait", function()
  local e = tether.event()
  cancel_blocked(function() e:wait() end)
end)

T.case("cancel a thread blocked in condition:wait; it gives the lock back", function()
  local c = tether.condition()
  cancel_blocked(function()
    local held <close> = c:held()
    c:wait()
  end)
  assert(c:acquire(0), "the cancelled waiter kept the condition's lock")
  c:release()
end)

T.case("cancel a thread blocked in queue:get", function()
  local q = tether.queue()
  cancel_blocked(function() q:get() end)
  q:put(1)
  assert(q:get(0) == 1)
end)

T.case("cancel a thread blocked in queue:put", function()
  local q = tether.queue(1)
  q:put("full")
  cancel_blocked(function() q:put("more") end)
  assert(q:size() == 1 and q:get() == "full")
end)

T.case("cancel a thread busy inside a coroutine it resumed", function()
  local ready = tether.event()
  local t = tether.thread(function()
    local co = coroutine.create(function()
      ready:set()
      while true do end
    end)
    local ok, err = coroutine.resume(co) -- the cancel passes through
    return "resume returned " .. tostring(ok) .. " " .. tostring(err)
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  assert_cancelled(t)
end)

T.case("cancel a thread inside coroutine.wrap, nested two deep", function()
  local ready = tether.event()
  local t = tether.thread(function()
    local inner = coroutine.wrap(function() ready:set() while true do end end)
    local outer = coroutine.wrap(function() inner() end)
    outer()
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  assert_cancelled(t)
end)

T.case("cancel a thread that yields back and forth between coroutines", function()
  local ready = tether.event()
  local t = tether.thread(function()
    local co = coroutine.wrap(function() while true do coroutine.yield() end end)
    ready:set()
    while true do co() end
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  assert_cancelled(t)
end)

T.case("pcall sees tether.Cancelled, and it comes back at the next line", function()
  -- cancellation is level-triggered: catching it does not end it
  local ready = tether.event()
  local caught = nil
  local t = tether.thread(function()
    local ok, err = pcall(function() ready:set() while true do end end)
    caught = not ok and err == tether.Cancelled
    while true do end -- raised again here
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  assert_cancelled(t)
  assert(caught == true)
end)

T.case("raise(value) raises that value in the thread", function()
  local ready = tether.event()
  local value = {reason = "stop"}
  local t = T.spinner(ready)
  assert(ready:wait(T.LIMIT))
  assert(t:raise(value) == true)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and rawequal(err, value))
  assert(t:status() == "error")
end)

T.case("raise and cancel on a finished thread return false", function()
  local t = tether.thread(function() end)
  t:join()
  assert(t:cancel() == false and t:raise("x") == false)
end)

T.case("a worker can cancel the main thread out of a wait", function()
  -- in a child: the main thread stays cancelled until it ends
  -- (the statements after the catch share its line: the next line would
  -- raise it again before they ran)
  local status, out = T.run_lua([[
    local tether = require "tether"
    local e = tether.event()
    local main = tether.current()
    local t = tether.thread(function() main:cancel() end) local ok, err = pcall(e.wait, e) local ok2, err2 = pcall(tether.sleep, 0) print("caught", err, err2)
    while true do end
  ]])
  assert(status == 1, out)
  assert(out:find("caught\ttether.Cancelled\ttether.Cancelled", 1, true), out)
end)

T.case("a thread can raise in itself", function()
  local ok, err = pcall(function()
    tether.current():raise("to myself")
    for _ = 1, 10 do end
    return "not raised"
  end)
  assert(not ok and err == "to myself", tostring(err))
end)

T.case("the newest of two undelivered raises wins", function()
  local t = tether.thread(function()
    tether.deferred(function()
      tether.current():raise("first")
      tether.current():raise("second")
    end)
    return "not raised"
  end)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "second", tostring(err))
end)

T.done()
