-- tether.executor, futures, tether.wait and tether.as_completed (issue 20
-- item 1): results, errors with the worker's traceback, errors nobody
-- retrieved reported at collection, cancel while queued and while running,
-- shutdown with tasks pending, <close> on an error path, nested submit,
-- 10,000 tiny tasks, and the same API over isolated interpreters.
local tether = require "tether"
local T = require "testlib"

local reported = {}
tether.excepthook = function(t, err, tb)
  reported[#reported + 1] = {thread = t, err = err, tb = tb}
end

T.case("submit and result; several results; map in order", function()
  local ex <close> = tether.executor{workers = 3, name = "pool"}
  local f = ex:submit(function(a, b) return a + b, "sum", nil end, 2, 3)
  local a, b, c = f:result()
  assert(a == 5 and b == "sum" and c == nil)
  assert(select("#", f:result()) == 3)
  assert(f:done() and not f:running() and not f:cancelled() and f:status() == "done")
  assert(f:exception() == nil)
  local squares = ex:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6, 7})
  assert(table.concat(squares, ",") == "1,4,9,16,25,36,49")
  local chunked = ex:map(function(x) return -x end, {1, 2, 3, 4, 5}, {chunks = 2})
  assert(table.concat(chunked, ",") == "-1,-2,-3,-4,-5")
  assert(tostring(ex):find("tether.executor 'pool' (3 thread workers)", 1, true))
end)

T.case("a task that raises: result raises with the worker's traceback", function()
  local ex <close> = tether.executor{workers = 1}
  local function inner() error("task failed") end
  local f = ex:submit(function() inner() end)
  local err = T.raises("task failed", f.result, f)
  assert(err:find("in the worker: stack traceback", 1, true), err)
  assert(err:find("in upvalue 'inner'", 1, true) or err:find("inner", 1, true), err)
  local e, tb = f:exception()
  assert(tostring(e):find("task failed") and tb:find("stack traceback"))
  assert(f:status() == "error")
  -- a non-string error is raised as it is
  local g = ex:submit(function() error({code = 7}) end)
  local ok, v = pcall(g.result, g)
  assert(not ok and type(v) == "table" and v.code == 7)
end)

T.case("an error nobody retrieves is reported through excepthook at collection", function()
  reported = {}
  local ex <close> = tether.executor{workers = 1}
  do
    local f = ex:submit(function() error("lost error") end)
    tether.wait({f})
    assert(f:done())
  end
  do -- retrieved: not reported
    local g = ex:submit(function() error("seen error") end)
    pcall(g.result, g)
  end
  for _ = 1, 3 do collectgarbage() end
  assert(#reported == 1, #reported)
  assert(tostring(reported[1].err):find("lost error", 1, true))
  assert(tostring(reported[1].err):find("nobody retrieved", 1, true))
  assert(reported[1].tb:find("stack traceback"))
  assert(getmetatable(reported[1].thread).__name == "tether.thread")
end)

-- A one-worker executor made busy until `gate` is set.
local function busy_executor()
  local ex = tether.executor{workers = 1}
  local gate, started = tether.event(), tether.event()
  local blocker = ex:submit(function() started:set() gate:wait() return "blocker" end)
  assert(started:wait(T.LIMIT))
  return ex, gate, blocker
end

T.case("cancel while queued: the task never runs", function()
  local ex, gate, blocker = busy_executor()
  local ran = false
  local f = ex:submit(function() ran = true end)
  local cancelled = {}
  f:add_done_callback(function(fut) cancelled[#cancelled + 1] = fut:cancelled() end)
  assert(f:cancel() == true)
  assert(f:cancelled() and f:done() and f:status() == "cancelled")
  assert(#cancelled == 1 and cancelled[1] == true)
  local ok, err = pcall(f.result, f)
  assert(not ok and rawequal(err, tether.Cancelled))
  gate:set()
  assert(blocker:result() == "blocker")
  ex:shutdown()
  assert(not ran)
  assert(f:cancel() == false) -- done already
  assert(blocker:cancel() == false)
end)

T.case("cancel while running: only that task is cancelled, the worker goes on", function()
  local ex <close> = tether.executor{workers = 1}
  local started, never = tether.event(), tether.event()
  local after = false
  local f = ex:submit(function()
    started:set()
    -- level-triggered inside the task: catching it does not end it
    pcall(never.wait, never)
    pcall(never.wait, never)
    never:wait()
    after = true
  end)
  assert(started:wait(T.LIMIT))
  assert(f:running())
  assert(f:cancel() == true)
  local ok, err = pcall(f.result, f, T.LIMIT)
  assert(not ok and rawequal(err, tether.Cancelled), tostring(err))
  assert(f:cancelled())
  assert(not after)
  -- the same worker runs the next tasks, with waits that work
  local g = ex:submit(function() tether.sleep(0.001) return "next" end)
  assert(g:result(T.LIMIT) == "next")
  local h = ex:submit(function() local q = tether.queue() q:put(1) return q:get(1) end)
  assert(h:result(T.LIMIT) == 1)
end)

T.case("shutdown with tasks pending: cancel = false runs them, cancel = true drops them", function()
  for _, cancel in ipairs({false, true}) do
    local ex, gate, blocker = busy_executor()
    local ran, fs = 0, {}
    for i = 1, 5 do fs[i] = ex:submit(function() ran = ran + 1 end) end
    local done = tether.event()
    local closer = tether.thread(function()
      ex:shutdown{wait = true, cancel = cancel}
      done:set()
    end)
    -- shutdown waits for the blocker; release it once the pending ones
    -- are cancelled (cancel = true) or at once
    if cancel then
      T.wait_for(function() return fs[5]:done() end, "the pending tasks cancelled")
    end
    gate:set()
    assert(closer:join(T.LIMIT))
    assert(done:is_set())
    assert(blocker:result() == "blocker")
    for i = 1, 5 do assert(fs[i]:cancelled() == cancel) end
    assert(ran == (cancel and 0 or 5), ran)
    T.raises("submit: the executor is shut down", ex.submit, ex, print)
    ex:shutdown() -- twice is harmless
  end
end)

T.case("shutdown{wait = false} returns at once; the tasks still finish", function()
  local ex, gate = busy_executor()
  local f = ex:submit(function() return 42 end)
  ex:shutdown{wait = false}
  gate:set()
  assert(f:result(T.LIMIT) == 42)
  ex:shutdown{wait = true}
end)

T.case("an executor closed by <close> on an error path", function()
  local ex_seen, f
  local ok, err = pcall(function()
    local ex <close> = tether.executor{workers = 2}
    ex_seen = ex
    f = ex:submit(function() tether.sleep(0.01) return "finished" end)
    error("the scope failed")
  end)
  assert(not ok and err:find("the scope failed"))
  -- closing shut it down and waited for its tasks and workers
  assert(f:done() and f:result() == "finished")
  for _, t in ipairs(ex_seen._threads) do assert(not t:alive()) end
  T.raises("shut down", ex_seen.submit, ex_seen, print)
end)

T.case("nested submit from inside a task", function()
  local ex <close> = tether.executor{workers = 2}
  local outer = ex:submit(function()
    local inner = ex:submit(function(x) return x * 2 end, 21)
    return inner:result()
  end)
  assert(outer:result(T.LIMIT) == 42)
end)

T.case("10,000 tiny tasks", function()
  local ex <close> = tether.executor{workers = 4}
  local fs = {}
  for i = 1, 10000 do fs[i] = ex:submit(function(x) return x end, i) end
  local sum = 0
  for i = 1, 10000 do sum = sum + fs[i]:result() end
  assert(sum == 10000 * 10001 // 2, sum)
end)

T.case("done callbacks: before and after completion, errors reported", function()
  reported = {}
  local ex <close> = tether.executor{workers = 1}
  local seen = {}
  local gate = tether.event()
  local f = ex:submit(function() gate:wait() return "v" end)
  f:add_done_callback(function(fut) seen[#seen + 1] = fut:result() end)
  f:add_done_callback(function() error("callback broke") end)
  gate:set()
  assert(f:result(T.LIMIT) == "v")
  T.wait_for(function() return #reported == 1 end, "the callback's error reported")
  assert(tostring(reported[1].err):find("callback broke", 1, true))
  f:add_done_callback(function(fut) seen[#seen + 1] = "late" end) -- runs at once
  assert(seen[1] == "v" and seen[2] == "late", table.concat(seen, ","))
  T.raises("function expected", f.add_done_callback, f, 42)
end)

T.case("tether.wait: all, first, first_error, timeout", function()
  local ex <close> = tether.executor{workers = 3}
  local gate = tether.event()
  local quick = ex:submit(function() return 1 end)
  local bad = ex:submit(function() error("bad") end)
  local slow = ex:submit(function() gate:wait() return 3 end)
  local done, not_done = tether.wait({quick, bad, slow}, {return_when = "first_error"})
  assert(bad:done())
  assert(#done + #not_done == 3)
  done, not_done = tether.wait({slow, quick}, {return_when = "first"})
  assert(#done >= 1 and quick:done())
  done, not_done = tether.wait({slow}, {timeout = 0.01})
  assert(#done == 0 and not_done[1] == slow)
  gate:set()
  done, not_done = tether.wait({quick, bad, slow})
  assert(#done == 3 and #not_done == 0)
  pcall(bad.result, bad)
  T.raises("return_when must be", tether.wait, {quick}, {return_when = "any"})
  T.raises("element 2 is not a future", tether.wait, {quick, "x"})
end)

T.case("tether.as_completed yields each future once, in completion order", function()
  local ex <close> = tether.executor{workers = 3}
  local gates = {tether.event(), tether.event(), tether.event()}
  local fs = {}
  for i = 1, 3 do fs[i] = ex:submit(function() gates[i]:wait() return i end) end
  local order = {}
  local it = tether.as_completed(fs)
  for _, i in ipairs({3, 1, 2}) do
    gates[i]:set()
    order[#order + 1] = it():result()
  end
  assert(it() == nil)
  assert(table.concat(order, ",") == "3,1,2", table.concat(order, ","))
  local never = tether.event()
  local stuck = ex:submit(function() never:wait() end)
  T.raises("as_completed: timeout (1 of 1 futures not done)",
           tether.as_completed({stuck}, 0.01))
  stuck:cancel()
end)

T.case("bad options are clear errors", function()
  T.raises("option 'workers' must be an integer in [1, 1024]", tether.executor, {workers = 0})
  T.raises("unknown option 'worker'", tether.executor, {worker = 2})
  T.raises("option 'interp' must be a boolean", tether.executor, {interp = 1})
  T.raises("option 'queue' must be an integer >= 0", tether.executor, {queue = -1})
  local ex <close> = tether.executor{workers = 1}
  T.raises("function expected", ex.submit, ex, 42)
  T.raises("bad self", ex.submit, {}, print)
end)

T.case("a bounded queue makes submit wait for room", function()
  local ex, gate = busy_executor()
  local ex2 <close> = tether.executor{workers = 1, queue = 1}
  local g2, s2 = tether.event(), tether.event()
  ex2:submit(function() s2:set() g2:wait() end)
  assert(s2:wait(T.LIMIT))
  ex2:submit(function() end) -- fills the queue
  local submitted = tether.event()
  local t = tether.thread(function() ex2:submit(function() end) submitted:set() end)
  assert(not submitted:wait(0.02)) -- blocked on the full queue
  g2:set()
  assert(t:join(T.LIMIT))
  assert(submitted:is_set())
  gate:set()
  ex:shutdown()
end)

T.case("interp = true: tasks run in isolated interpreters", function()
  local ex <close> = tether.executor{workers = 2, interp = true}
  local f = ex:submit(function(n) local s = 0 for i = 1, n do s = s + i end return s, "ok" end, 1000)
  local s, ok = f:result(T.LIMIT)
  assert(s == 500500 and ok == "ok")
  -- a table is copied both ways
  local g = ex:submit(function(t) t.n = #t return t end, {1, 2, 3})
  assert(g:result(T.LIMIT).n == 3)
  -- an error keeps the worker's traceback
  local h = ex:submit(function() local function deep() error("remote failure") end deep() end)
  local err = T.raises("remote failure", h.result, h, T.LIMIT)
  assert(err:find("in the worker: stack traceback", 1, true), err)
  -- a non-string error value is raised as it is, copied, as on threads
  -- (nil and tables arrived as their tostring); one the codec cannot
  -- copy arrives as its tostring, as from an I:thread's join
  local e1 = ex:submit(function() error({code = 7}) end)
  local ok, v = pcall(e1.result, e1, T.LIMIT)
  assert(not ok and type(v) == "table" and v.code == 7, tostring(v))
  local e2 = ex:submit(function() error(nil) end)
  ok, v = pcall(e2.result, e2, T.LIMIT)
  assert(not ok and v == nil, tostring(v))
  local e3 = ex:submit(function() error(false) end)
  ok, v = pcall(e3.result, e3, T.LIMIT)
  assert(not ok and v == false, tostring(v))
  local e4 = ex:submit(function()
    error(setmetatable({f = print}, {__tostring = function() return "uncopyable error" end}))
  end)
  ok, v = pcall(e4.result, e4, T.LIMIT)
  assert(not ok and type(v) == "string" and v:find("^uncopyable error\n"), tostring(v))
  assert(select(2, e4:exception()):find("stack traceback", 1, true))
  assert(ex:submit(function() return "worker alive" end):result(T.LIMIT) == "worker alive")
  -- an uncopyable error whose __tostring raises or returns no string
  -- still arrives (a placeholder), and the worker goes on (it hung)
  for which = 1, 2 do
    local e5 = ex:submit(function(w)
      local f = w == 1 and function() error("boom") end or function() return {} end
      error(setmetatable({f = print}, {__tostring = f}))
    end, which)
    ok, v = pcall(e5.result, e5, T.LIMIT)
    assert(not ok and type(v) == "string"
           and v:find("^%(error object is a table value%)\n"), tostring(v))
  end
  assert(ex:submit(function() return "worker alive" end):result(T.LIMIT) == "worker alive")
  -- what cannot be copied is a clear error at submit
  local up = 1
  T.raises("upvalue", ex.submit, ex, function() return up end)
  T.raises("cannot copy a function", ex.submit, ex, function(x) return x end, print)
  assert(table.concat(ex:map(function(x) return x + 1 end, {1, 2, 3}), ",") == "2,3,4")
  assert(table.concat(ex:map(function(x) return x * 10 end, {1, 2, 3}, {chunks = 2}), ",") == "10,20,30")
end)

T.case("interp = true: cancel while running; the worker goes on", function()
  local ex <close> = tether.executor{workers = 1, interp = true}
  local f = ex:submit(function() local tether = require "tether" tether.sleep(3600) end)
  T.wait_for(function() return f:running() end, "the task to start")
  tether.sleep(0.01)
  assert(f:cancel())
  local ok, err = pcall(f.result, f, T.LIMIT)
  assert(not ok and rawequal(err, tether.Cancelled), tostring(err))
  local g = ex:submit(function() return "after" end)
  assert(g:result(T.LIMIT) == "after")
end)

T.done()
