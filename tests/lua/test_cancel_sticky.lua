-- Cancellation is level-triggered (docs/lua.md, "Asynchronous
-- exceptions"): once a thread is cancelled, every later wait and hook
-- point raises tether.Cancelled again until the thread ends, so no pcall,
-- xpcall handler or __gc can swallow it; inside tether.deferred it waits
-- for the end of the block.  t:raise(v) stays a one-shot error.
local tether = require "tether"
local T = require "testlib"

local function assert_cancelled(t)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false, "the thread was not cancelled: " .. tostring(ok) .. " " .. tostring(err))
  assert(err == tether.Cancelled, tostring(err))
  assert(t:status() == "cancelled", t:status())
end

-- Once a cancel is caught, the next line may raise it again, so the
-- statements that must run after a catch share its line below.

T.case("a pcall loop cannot swallow a cancel", function()
  local ready = tether.event()
  local caught = 0
  local t = tether.thread(function()
    for _ = 1, 5 do
      local ok, err = pcall(function() ready:set() while true do end end) caught = caught + 1
    end
    while true do end
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel() -- once
  assert_cancelled(t)
  assert(caught >= 1, caught)
end)

-- Runs `wait` (a C function, called through pcall with `...`) in a thread
-- that has caught a cancel; it must raise tether.Cancelled at once.
local function wait_after_cancel(wait, ...)
  local ready = tether.event()
  local args = table.pack(...)
  local result
  local t = tether.thread(function()
    pcall(function() ready:set() while true do end end) local ok, err = pcall(wait, table.unpack(args, 1, args.n)) result = not ok and err
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  t:join(T.LIMIT)
  return result
end

T.case("every wait of a cancelled thread raises at once", function()
  local q = tether.queue()
  local e = tether.event()
  local held = tether.lock()
  held:acquire()
  assert(wait_after_cancel(tether.sleep, 1e6) == tether.Cancelled)
  assert(wait_after_cancel(q.get, q) == tether.Cancelled)
  assert(wait_after_cancel(e.wait, e) == tether.Cancelled)
  assert(wait_after_cancel(held.acquire, held) == tether.Cancelled)
  held:release()
end)

T.case("tether.deferred finishes its block, then the cancel comes back", function()
  local ready = tether.event()
  local cleaned = false
  local function cleanup()
    local q = tether.queue()
    q:put(1)
    assert(q:get() == 1)       -- waits work inside the block
    tether.sleep(0.001)
    for _ = 1, 1000 do end     -- and hook points raise nothing
    cleaned = true
  end
  local t = tether.thread(function()
    -- (a function written inline would put lines between the two calls)
    pcall(function() ready:set() while true do end end) tether.deferred(cleanup)
    return "not cancelled"
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  assert_cancelled(t)
  assert(cleaned)
end)

T.case("an xpcall handler of a cancel runs outside the hook, cancellable", function()
  -- before: the handler ran inside the module's hook with hooks off, so a
  -- handler that loops kept the GIL for ever and froze every thread
  local ready = tether.event()
  local handled = false
  local t = tether.thread(function()
    xpcall(function() ready:set() while true do end end,
           function(e)
             handled = e == tether.Cancelled
             while true do end -- cancelled again here
           end)
    return "not cancelled"
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  local ok, err = t:join(0.05) -- the main thread runs meanwhile
  if ok == nil then ok, err = t:join(T.LIMIT) end
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(handled)
end)

T.case("an xpcall handler of an ordinary error still runs where it was raised", function()
  local function where_it_fails() error("boom") end
  local ok, tb = xpcall(where_it_fails, debug.traceback)
  local at = ":" .. debug.getinfo(where_it_fails, "S").linedefined .. ": in function"
  assert(not ok and tb:find("boom", 1, true) and tb:find(at, 1, true), tb)
  local ok2, v = xpcall(function(a, b) return a + b end, error, 1, 2)
  assert(ok2 and v == 3)
  local co = coroutine.wrap(function()
    return xpcall(function() coroutine.yield(1) error("later") end,
                  function(m) return "handled " .. m end)
  end)
  assert(co() == 1)
  local ok3, m = co()
  assert(ok3 == false and m:find("handled", 1, true) and m:find("later", 1, true), m)
end)

T.case("xpcall(f, debug.traceback) shows the frames plain Lua shows", function()
  -- the module's xpcall wraps the handler; with debug.traceback the
  -- wrapper's frame came first in every traceback ("[C]: in ?")
  local ok, tb = xpcall(function() error("boom") end, debug.traceback)
  assert(not ok)
  local first = tb:match("stack traceback:\n\t([^\n]*)")
  assert(first == "[C]: in function 'error'", tb)
  -- and a cancel still ends a thread whose handler is debug.traceback
  local ready = tether.event()
  local t = tether.thread(function()
    for _ = 1, 3 do xpcall(function() ready:set() while true do end end, debug.traceback) end
    while true do end
  end)
  assert(ready:wait(T.LIMIT))
  t:cancel()
  assert_cancelled(t)
end)

T.case("an exception put off by xpcall and caught inside it does not run the handler twice", function()
  -- A raise lands in a `load` reader (Lua's parser catches it, so `load`
  -- returns it); the xpcall's handler had been put off for it. The next
  -- error that reaches the handler once ran it twice (H(H(normal))).
  local ready = tether.event()
  local t = tether.thread(function()
    local calls, got = 0, nil
    local r = table.pack(xpcall(function()
      local _, e = load(function() ready:set() while true do end end)
      got = e
      error("normal", 0)
    end, function(m) calls = calls + 1 return "H(" .. tostring(m) .. ")" end))
    return calls, r[2], got
  end)
  assert(ready:wait(T.LIMIT))
  t:raise("X")
  local ok, calls, msg, got = t:join(T.LIMIT)
  assert(ok, tostring(calls))
  assert(got == "X", tostring(got))
  assert(calls == 1 and msg == "H(normal)", calls .. " " .. tostring(msg))
end)

T.case("a cancel inside a __gc is not swallowed", function()
  -- Lua turns an error inside a finalizer into a warning; the cancel must
  -- come back outside.  (Waits inside a finalizer do not block, but they
  -- still deliver a pending exception.)
  local t = tether.thread(function()
    local e = tether.event()
    local delivered = 0
    local function fin()
      tether.current():cancel() local ok, err = pcall(e.wait, e) delivered = delivered + 1 e:wait()
    end
    do setmetatable({}, {__gc = fin}) end
    collectgarbage()
    collectgarbage()
    for _ = 1, 1000 do end
    return "survived", delivered
  end)
  assert_cancelled(t)
end)

T.case("raise(v) stays one-shot", function()
  local ready = tether.event()
  local go = tether.event()
  local t = tether.thread(function()
    local ok, err = pcall(function() ready:set() while true do end end)
    assert(not ok and err == "once")
    go:wait() -- a cancel would come back here
    for _ = 1, 1000 do end
    return "survived"
  end)
  assert(ready:wait(T.LIMIT))
  t:raise("once")
  go:set()
  local ok, v = t:join(T.LIMIT)
  assert(ok == true and v == "survived", tostring(v))
end)

T.done()
