-- Review of the concurrency toolkit (issue 20): what a hostile user tried
-- and the module got wrong before.  Each case failed before its fix.
local tether = require "tether"
local T = require "testlib"

tether.excepthook = function() end

T.case("map with chunks keeps nil results in their places", function()
  local ex <close> = tether.executor{workers = 2}
  local function f(x) if x % 2 == 0 then return nil end return x * 10 end
  for _, chunks in ipairs({1, 2, 3, 5}) do
    local r = ex:map(f, {1, 2, 3, 4, 5}, {chunks = chunks})
    assert(r[1] == 10 and r[2] == nil and r[3] == 30 and r[4] == nil and r[5] == 50,
           "chunks " .. chunks .. ": " .. tostring(r[3]) .. " " .. tostring(r[5]))
  end
end)

T.case("map and wait check their options: clear errors, nothing submitted", function()
  local ex <close> = tether.executor{workers = 1}
  local ran = 0
  local function f(x) ran = ran + 1 return x end
  T.raises("map: bad argument #3 (options table expected", ex.map, ex, f, {1}, 5)
  T.raises("map: option 'timeout' must be a non-negative number", ex.map, ex, f, {1}, {timeout = "x"})
  T.raises("map: option 'timeout' must be a non-negative number", ex.map, ex, f, {1}, {timeout = -1})
  T.raises("map: unknown option 'chunk'", ex.map, ex, f, {1, 2}, {chunk = 2})
  T.raises("map: bad argument #1 (function expected", ex.map, ex, 42, {1, 2})
  local up = 1
  local iex <close> = tether.executor{workers = 1, interp = true}
  T.raises("upvalue 'up'", iex.map, iex, function() return up end, {1, 2}, {chunks = 2})
  assert(ran == 0)
  T.raises("wait: bad argument #2 (options table expected", tether.wait, {}, 5)
  T.raises("wait: option 'timeout' must be a non-negative number", tether.wait, {}, {timeout = "x"})
  T.raises("wait: unknown option 'returnwhen'", tether.wait, {}, {returnwhen = "first"})
  T.raises("as_completed: bad argument #2 (timeout must be a non-negative number",
           tether.as_completed, {}, "x")
end)

T.case("wait and as_completed over more futures than a select takes", function()
  local ex <close> = tether.executor{workers = 2}
  local fs = {}
  for i = 1, 6000 do fs[i] = ex:submit(function(x) return x end, i) end
  local done, not_done = tether.wait(fs)
  assert(#done == 6000 and #not_done == 0)
  local gs = {}
  for i = 1, 6000 do gs[i] = ex:submit(function(x) return x end, i) end
  local n, seen = 0, {}
  for f in tether.as_completed(gs) do
    assert(not seen[f]) seen[f] = true
    n = n + 1
  end
  assert(n == 6000)
end)

T.case("wait: futures that finish while it looks at them (no 'got 0')", function()
  local ex <close> = tether.executor{workers = 2}
  for _ = 1, 6 do
    local fs = {}
    for i = 1, 4000 do fs[i] = ex:submit(function(x) return x end, i) end
    local done = tether.wait(fs)
    assert(#done == 4000)
  end
end)

T.case("submit racing shutdown: an error, or a future that completes", function()
  -- deterministic: the callable check runs code in the window between
  -- submit's check and its put (getmetatable reads __metatable)
  local ex = tether.executor{workers = 1}
  local callable = setmetatable({}, {__call = function() return "ran" end,
    __metatable = setmetatable({}, {__index = function(_, k)
      if k == "__call" then ex:shutdown{wait = false} return true end end})})
  local ok, f = pcall(ex.submit, ex, callable)
  if ok then
    assert(f:result() == "ran")
  else
    assert(tostring(f):find("shut down"), f)
  end
  ex:shutdown()
  -- and from another thread, many times
  for _ = 1, 20 do
    local ex2 = tether.executor{workers = 2}
    local got = tether.queue()
    local sub = tether.thread(function()
      for i = 1, 100000 do
        local ok2, g = pcall(ex2.submit, ex2, function() return i end)
        if not ok2 then return i end
        got:put(g)
      end
    end)
    tether.sleep(0.001)
    ex2:shutdown()
    sub:join()
    while true do
      local g = got:get(0)
      if g == nil then break end
      -- every future handed out completes: none is stranded behind a STOP
      local done = g:done() or (tether.wait({g}, {timeout = 30}) and g:done())
      assert(done, "a future stranded after shutdown")
    end
  end
end)

T.case("a program that ends with interp executors never shut down exits", function()
  -- (hung for ever: the interpreters' task loops were not daemons)
  local status, out = T.run_lua([[
    local tether = require "tether"
    local idle = tether.executor{workers = 2, interp = true}
    local used = tether.executor{workers = 2, interp = true}
    assert(used:submit(function() return 1 end):result() == 1)
    used:submit(function() while true do end end)
    tether.sleep(0.05)
    print("end of script")
  ]])
  assert(status == 0 and out:find("end of script"), out)
end)

T.case("shutdown checks its options before it shuts anything down", function()
  local ex = tether.executor{workers = 1}
  T.raises("shutdown: bad argument #1 (options table expected", ex.shutdown, ex, 5)
  T.raises("shutdown: unknown option 'cancle'", ex.shutdown, ex, {cancle = true})
  T.raises("shutdown: option 'wait' must be a boolean", ex.shutdown, ex, {wait = 0})
  assert(ex:submit(function() return "still open" end):result() == "still open")
  ex:shutdown()
end)

T.case("an executor collected without shutdown lets its workers go", function()
  local ts = {}
  do
    local ex = tether.executor{workers = 3}
    assert(ex:submit(function() return 1 end):result() == 1)
    for i, t in ipairs(ex._threads) do ts[i] = t end
  end
  collectgarbage() collectgarbage()
  for _, t in ipairs(ts) do
    assert(t:join(60), "a worker of a collected executor still runs")
  end
end)

-- Second pass (issue 20, hostile review 2).

T.case("an executor whose worker k cannot start stops the ones it started", function()
  local before = #tether.threads()
  -- "<125 bytes>-10" is 128 bytes, one past the limit of thread names:
  -- workers 1 to 9 start, worker 10 cannot.
  local err = T.raises("tether.executor: worker 10 could not start: option 'name' is 128 bytes long",
                       tether.executor, {workers = 12, name = string.rep("n", 125)})
  assert(#err < 300, "the message repeats the name: " .. #err .. " bytes")
  collectgarbage() collectgarbage()
  T.wait_for(function() return #tether.threads() == before end,
             "the started workers to end (" .. #tether.threads() .. " threads, " .. before .. " before)")
end)

T.case("shutdown{wait = true} from inside one of the executor's own tasks", function()
  local ex = tether.executor{workers = 2}
  local f = ex:submit(function() ex:shutdown{wait = true} return "returned" end)
  assert(f:result(T.LIMIT) == "returned")
  T.raises("submit: the executor is shut down", ex.submit, ex, function() end)
  for _, t in ipairs(ex._threads) do assert(t:join(T.LIMIT)) end
end)

T.case("as_completed yields a future listed twice once", function()
  local ex <close> = tether.executor{workers = 1}
  local f, g = ex:submit(function() return 1 end), ex:submit(function() return 2 end)
  local n, seen = 0, {}
  for h in tether.as_completed({f, g, f, f, g}) do
    assert(not seen[h], "yielded twice")
    seen[h] = true
    n = n + 1
  end
  assert(n == 2, n)
end)

T.case("map's timeout is map's error, not result's", function()
  local ex <close> = tether.executor{workers = 1}
  local gate = tether.event()
  local err = T.raises("map: timeout (2 of 2 tasks not done)", ex.map, ex,
                       function(x) gate:wait() return x end, {1, 2}, {timeout = 0})
  assert(not err:find("result:", 1, true), err)
  gate:set()
end)

T.case("an executor collected with its bounded queue full still stops every worker", function()
  -- Both workers busy, the queue (2) full: the finalizer cannot put its
  -- STOPs without waiting, and a worker that never gets one waits on the
  -- queue for ever.  Each task that leaves the full queue makes room for
  -- an owed STOP.
  local gate = tether.event()
  local threads, ran = nil, 0
  do
    local ex = tether.executor{workers = 2, queue = 2}
    threads = {table.unpack(ex._threads)}
    local busy = tether.queue()
    for _ = 1, 2 do ex:submit(function() busy:put(true) gate:wait() ran = ran + 1 end) end
    assert(busy:get(T.LIMIT) and busy:get(T.LIMIT))
    for _ = 1, 2 do ex:submit(function() ran = ran + 1 end) end
    assert(ex._ctl.q:size() == 2)
  end
  for _ = 1, 3 do collectgarbage() end
  gate:set()
  for i, t in ipairs(threads) do
    local ok = t:join(T.LIMIT)
    assert(ok == true, "worker " .. i .. " did not stop: " .. tostring(ok))
  end
  assert(ran == 4, ran)
end)

-- Third pass (issue 20, hostile review 3).

T.case("a worker that takes a STOP while STOPs are still owed passes them on", function()
  -- Both workers busy, the queue (1) full: the finalizer owes both STOPs.
  -- The worker that takes the last task pays one (the queue has room for
  -- one only); whoever takes that STOP must pay the one still owed, or
  -- the other worker waits on the empty queue for ever.
  local gate_a, gate_b = tether.event(), tether.event()
  local threads, ran = nil, 0
  do
    local ex = tether.executor{workers = 2, queue = 1}
    threads = {table.unpack(ex._threads)}
    local busy = tether.queue()
    ex:submit(function() busy:put(true) gate_a:wait() ran = ran + 1 end)
    ex:submit(function() busy:put(true) gate_b:wait() ran = ran + 1 end)
    assert(busy:get(T.LIMIT) and busy:get(T.LIMIT))
    -- the third task waits in the full queue
    ex:submit(function() ran = ran + 1 end)
    assert(ex._ctl.q:size() == 1)
  end
  for _ = 1, 3 do collectgarbage() end
  gate_a:set() -- worker A takes the queued task and pays one STOP
  T.wait_for(function() return ran == 2 end, "worker A's two tasks")
  gate_b:set() -- worker B needs the STOP still owed
  for i, t in ipairs(threads) do
    local ok = t:join(T.LIMIT)
    assert(ok == true, "worker " .. i .. " did not stop: " .. tostring(ok))
  end
  assert(ran == 3, ran)
end)

T.case("shutdown{wait = false} with the bounded queue full does not wait for room", function()
  local gate = tether.event()
  local ex = tether.executor{workers = 1, queue = 1}
  local busy = tether.queue()
  local first = ex:submit(function() busy:put(true) gate:wait() return 1 end)
  assert(busy:get(T.LIMIT))
  local second = ex:submit(function() return 2 end)
  -- (on a daemon thread: a shutdown that waits for room fails the case
  -- instead of hanging it)
  local t = tether.thread({daemon = true}, function() ex:shutdown{wait = false} end)
  local ok = t:join(T.LIMIT)
  gate:set()
  assert(ok == true, "shutdown{wait = false} waited for room in the queue")
  assert(first:result(T.LIMIT) == 1 and second:result(T.LIMIT) == 2)
  for i, w in ipairs(ex._threads) do assert(w:join(T.LIMIT) == true, "worker " .. i) end
end)

T.case("shutdown from the only worker's task with the bounded queue full", function()
  -- The task is the one that would make room: a shutdown that waits for
  -- room waits for itself.
  local gate = tether.event()
  local ex = tether.executor{workers = 1, queue = 1}
  local busy = tether.queue()
  local f = ex:submit(function() busy:put(true) gate:wait() ex:shutdown{wait = false} return "shut" end)
  assert(busy:get(T.LIMIT))
  local g = ex:submit(function() return "queued" end)
  gate:set()
  assert(f:result(T.LIMIT) == "shut")
  assert(g:result(T.LIMIT) == "queued")
  local h = select(2, pcall(ex.submit, ex, print))
  assert(tostring(h):find("the executor is shut down", 1, true), tostring(h))
  assert(ex._threads[1]:join(T.LIMIT) == true)
  -- with wait = true (a <close> in the task) too
  local ex2 = tether.executor{workers = 1, queue = 1}
  gate = tether.event()
  f = ex2:submit(function() busy:put(true) gate:wait() local e <close> = ex2 return "closed" end)
  assert(busy:get(T.LIMIT))
  g = ex2:submit(function() return "queued" end)
  gate:set()
  assert(f:result(T.LIMIT) == "closed")
  assert(g:result(T.LIMIT) == "queued")
  assert(ex2._threads[1]:join(T.LIMIT) == true)
end)

T.case("two tasks of one executor that both shut it down with wait", function()
  -- Each joined the other worker: each waited for the other for ever.
  local ex = tether.executor{workers = 3}
  local arrived = tether.queue()
  local go = tether.event()
  local fs = {}
  for i = 1, 2 do
    fs[i] = ex:submit(function() arrived:put(i) go:wait() ex:shutdown() return i end)
  end
  assert(arrived:get(T.LIMIT) and arrived:get(T.LIMIT))
  go:set()
  for i = 1, 2 do
    local ok, r = pcall(fs[i].result, fs[i], T.LIMIT)
    assert(ok and r == i, "task " .. i .. ": " .. tostring(r))
  end
  for i, w in ipairs(ex._threads) do assert(w:join(T.LIMIT) == true, "worker " .. i) end
end)

T.case("map's copy errors (interp = true) are map's, without a position", function()
  local ex <close> = tether.executor{workers = 1, interp = true}
  local err = T.raises("cannot copy a FILE*", ex.map, ex, function(x) return x end, {1, io.stdout})
  assert(err:find("^map: ") , err)
  err = T.raises("cannot copy a FILE*", ex.map, ex, function(x) return x end, {1, io.stdout}, {chunks = 2})
  assert(err:find("^map: ") , err)
end)

T.case("a thread in ch:recv when the program ends gets its message (no crash)", function()
  -- lua_close runs the finalizers of the objects newer than the module's
  -- sentinel before the sentinel joins the threads: the message blob of a
  -- thread waiting in ch:recv was finalized under it, and when the message
  -- came (while the close joined that thread) it was freed with free()
  -- instead of the channel's release (abort: invalid pointer).  Here the
  -- message is sent only once the close has begun: a finalizer tells the
  -- sender (a thread of another interpreter) to go.
  local status, out = T.run_lua([[
    local tether = require "tether"
    local I = tether.interp() -- renews the sentinel: older than what follows
    local go, msg = tether.channel(), tether.channel()
    I:thread({daemon = true}, function(go, msg)
      go:recv()
      msg:send("the message")
    end, go, msg)
    local ready = tether.queue()
    local t = tether.thread(function() ready:put(true) print("got " .. tostring(msg:recv())) end)
    -- (newer than t, whose finalizer would wait for it)
    local closing = setmetatable({}, {__gc = function() go:send(true) end})
    ready:get()
    tether.sleep(0.05) -- lets t reach its wait (without it the case may pass vacuously)
    print("end of script")
  ]])
  assert(status == 0 and out:find("got the message", 1, true), status .. ": " .. out)
end)

T.case("a thread in ch:send when the program ends releases the channels of its message", function()
  -- lua_close runs the finalizers of the objects newer than the module's
  -- sentinel before the sentinel joins the threads: the message blob of a
  -- thread waiting in ch:send on a full channel was finalized under it,
  -- and the array of the channel references the message held went with
  -- it, so a send that then failed (here: it times out while the close
  -- joins the thread) never released them.  TETHER_DEBUG=1 lists the
  -- handles still open when the runtime finalizes (after the join): the
  -- payload channel, whose userdata is finalized before the sentinel, must
  -- not be among them.  The switch interval of 10 s keeps the GIL with the
  -- thread until it blocks in the send, so the script ends only then.
  local status, out = T.run_lua([[
    local tether = require "tether"
    tether.switchinterval(10)
    local full, ready, go = tether.channel(1), tether.queue(), tether.queue()
    assert(full:send("fills it"))
    tether.thread(function()
      local payload = go:get()
      ready:put(true)
      print("send: " .. tostring(full:send(payload, 0.3)))
    end)
    -- Newer than the thread (which renewed the sentinel), as the blob is.
    local payload = tether.channel()
    local function handle(ch) -- as the report writes it
      return ("0x%016x"):format(tonumber(tostring(ch):match("0x(%x+)"), 16))
    end
    print("full " .. handle(full) .. ", payload " .. handle(payload))
    go:put(payload)
    ready:get()
    print("end of script")
  ]], "TETHER_DEBUG=1")
  assert(status == 0 and out:find("end of script\nsend: false\n"), status .. ": " .. out)
  local full, payload = out:match("full (0x%x+), payload (0x%x+)")
  -- (full, older than the sentinel, is still open there: the report ran)
  assert(out:find("channel handle " .. full .. " still open", 1, true), out)
  assert(not out:find("channel handle " .. payload .. " still open", 1, true), out)
end)

T.done()
