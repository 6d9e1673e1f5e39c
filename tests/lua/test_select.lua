-- tether.select (issue 20 item 2): the first ready of queues, channels,
-- events, threads and futures, one item consumed; fair; timeouts; cancel;
-- a channel fed from another interpreter.
local tether = require "tether"
local T = require "testlib"

T.case("4 producers on 4 queues, one consumer: every item exactly once", function()
  local N = 500
  local qs = {tether.queue(), tether.queue(8), tether.queue(), tether.queue(1)}
  local producers = {}
  for p = 1, 4 do
    producers[p] = tether.thread(function()
      for i = 1, N do qs[p]:put(p * 100000 + i) end
    end)
  end
  local seen, next_of, count = {}, {0, 0, 0, 0}, 0
  while count < 4 * N do
    local q, v = tether.select(qs, T.LIMIT)
    assert(q, "select timed out")
    local p = v // 100000
    assert(qs[p] == q, "the value came from another queue")
    assert(not seen[v], "received twice: " .. v)
    seen[v] = true
    assert(v % 100000 == next_of[p] + 1, "out of order")
    next_of[p] = v % 100000
    count = count + 1
  end
  for p = 1, 4 do assert(producers[p]:join(T.LIMIT)) assert(#qs[p] == 0) end
end)

T.case("a timeout with nothing ready; a zero timeout polls once", function()
  local q, e = tether.queue(), tether.event()
  local a, b = tether.select({q, e}, 0.01)
  assert(a == nil and b == "timeout")
  a, b = tether.select({q, e}, 0)
  assert(a == nil and b == "timeout")
end)

T.case("exactly one item is consumed", function()
  local q1, q2 = tether.queue(), tether.queue()
  q1:put("a") q1:put("b") q2:put("c")
  local src, v = tether.select({q1, q2})
  assert(v == "a" or v == "c")
  assert(#q1 + #q2 == 2)
end)

T.case("fair: a source that is always ready does not starve the others", function()
  local busy, other = tether.queue(), tether.queue()
  for i = 1, 100 do busy:put(i) other:put(i) end
  local from_other = 0
  for _ = 1, 100 do
    local src = tether.select({busy, other})
    if src == other then from_other = from_other + 1 end
  end
  assert(from_other > 0 and from_other < 100, from_other)
end)

T.case("fair with other selects between (a wait, a result): no aliasing", function()
  -- The starting point came from one counter shared by every select of
  -- the process: a consumer that made one other select-based wait per
  -- item (select, tether.wait, a result of a future not done) always
  -- started at the same source, and the other never came.
  local ex <close> = tether.executor{workers = 1}
  local idle = tether.queue()
  local gate = tether.event()
  local betweens = {
    function() tether.select({idle}, 0) end,
    function() tether.select({idle}, 0) tether.select({idle}, 0) end,
    function() -- a result of a future not done: a select inside
      local f = ex:submit(function() gate:wait() end)
      tether.thread(function() gate:set() end)
      f:result(T.LIMIT)
      gate:clear()
    end,
  }
  for b, between in ipairs(betweens) do
    for n = 2, 3 do
      local qs, got = {}, {}
      for i = 1, n do
        qs[i] = tether.queue()
        for k = 1, 60 do qs[i]:put(k) end
        got[qs[i]] = 0
      end
      for _ = 1, 60 do
        local src = tether.select(qs)
        got[src] = got[src] + 1
        between()
      end
      for i = 1, n do
        assert(got[qs[i]] > 0, "between " .. b .. ", " .. n .. " sources: source " .. i
               .. " never chosen in 60 selects")
      end
    end
  end
end)

T.case("events, threads and futures as sources", function()
  local e = tether.event()
  local t = tether.thread(function() e:wait() return "thread result" end)
  local q = tether.queue()
  tether.thread(function() tether.sleep(0.005) e:set() end)
  local src, v = tether.select({q, e}, T.LIMIT)
  assert(src == e and v == true)
  src, v = tether.select({q, t}, T.LIMIT) -- a finished thread gives what join gives
  local ok, r = select(2, tether.select({q, t}, T.LIMIT))
  assert(ok == true and r == "thread result")
  local ex <close> = tether.executor{workers = 1}
  local f = ex:submit(function() return 7, 8 end)
  local s2, fok, a, b = tether.select({q, f}, T.LIMIT)
  assert(s2 == f and fok == true and a == 7 and b == 8)
  local g = ex:submit(function() error("in a future") end)
  local s3, gok, err = tether.select({g}, T.LIMIT)
  assert(s3 == g and gok == false and err:find("in a future"))
end)

T.case("cancel during select", function()
  local q, e = tether.queue(), tether.event()
  local entered = tether.event()
  local t = tether.thread(function()
    entered:set()
    return tether.select({q, e})
  end)
  assert(entered:wait(T.LIMIT))
  tether.sleep(0.01) -- most likely blocked in the select by now; either way it is cancelled
  t:cancel()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and rawequal(err, tether.Cancelled))
  assert(t:status() == "cancelled")
  -- the select left nothing behind: the sources work as before
  q:put(1)
  assert(q:get(0) == 1)
  e:set()
  assert(tether.select({e}, 0) == e)
end)

T.case("a queue and a channel fed from another interpreter", function()
  local ch = tether.channel()
  local q = tether.queue()
  local i = tether.interp()
  local sender = i:thread(function(c, n)
    local tether = require "tether"
    for k = 1, n do c:send({k = k}) tether.sleep(0) end
  end, ch, 200)
  local producer = tether.thread(function()
    for k = 1, 200 do q:put(k) end
  end)
  local from_ch, from_q = 0, 0
  while from_ch + from_q < 400 do
    local src, v = tether.select({ch, q}, T.LIMIT)
    assert(src, "select timed out")
    if src == ch then
      from_ch = from_ch + 1
      assert(v.k == from_ch)
    else
      from_q = from_q + 1
      assert(v == from_q)
    end
  end
  assert(sender:join(T.LIMIT))
  assert(producer:join(T.LIMIT))
  ch:close()
  local src, v, why = tether.select({ch, q}, T.LIMIT)
  assert(src == ch and v == nil and why == "closed")
  i:close()
end)

-- A FIFO opened for reading and writing: nothing is readable until
-- someone writes (as in test_wait_fd.lua).
local function fifo()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkfifo " .. path))
  return assert(io.open(path, "r+")), path
end

T.case("file descriptors: with a queue, by wait_fd's rules, nothing consumed", function()
  local f, path = fifo()
  local q = tether.queue()
  local src, why = tether.select({f, q}, 0.01)
  assert(src == nil and why == "timeout")
  -- a queue item wakes a select that also waits for a descriptor
  local t = tether.thread(function() tether.sleep(0.005) q:put("item") end)
  src, why = tether.select({f, q}, T.LIMIT)
  assert(src == q and why == "item")
  assert(t:join(T.LIMIT))
  -- the descriptor: ready once written to; select reads nothing
  local writer = tether.thread(function() tether.sleep(0.005) f:write("x") f:flush() end)
  local fsrc = {fd = f, mode = "r"}
  src, why = tether.select({q, fsrc}, T.LIMIT)
  assert(src == fsrc and why == "r", tostring(why))
  assert(writer:join(T.LIMIT))
  assert(tether.select({f}, 0) == f) -- still there
  assert(f:read(1) == "x")
  assert(select(2, tether.select({{fd = f, mode = "w"}}, T.LIMIT)) == "w")
  T.raises("mode must be", tether.select, {{fd = f, mode = "x"}})
  T.raises("cannot be waited for in one select", tether.select, {f, tether.channel()})
  T.raises("is not an open file descriptor", tether.select, {{fd = 987654}})
  f:close()
  T.raises("the file is closed", tether.select, {f})
  os.remove(path)
end)

T.case("cancel during a select on a descriptor", function()
  local f, path = fifo()
  local entered = tether.event()
  local t = tether.thread(function()
    entered:set()
    return tether.select({f, tether.queue()})
  end)
  assert(entered:wait(T.LIMIT))
  tether.sleep(0.01)
  t:cancel()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and rawequal(err, tether.Cancelled))
  f:close()
  os.remove(path)
end)

T.case("bad input", function()
  T.raises("select needs 1 to 4096 sources; got 0", tether.select, {})
  T.raises("source 2 is 42; a queue, channel, event, thread, future or file descriptor was expected",
           tether.select, {tether.queue(), 42})
  T.raises("table expected", tether.select, tether.queue())
  T.raises("cannot be waited for", tether.select, {tether.current()})
end)

T.done()
