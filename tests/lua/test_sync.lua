-- sleep, lock, rlock, event, condition, queue, and <close>.
local tether = require "tether"
local T = require "testlib"

T.case("sleep lets other threads run", function()
  local ran = false
  local t = tether.thread(function() ran = true end)
  tether.sleep(0)
  T.wait_for(function() return ran end)
  assert(t:join())
  tether.sleep(0.001)
end)

T.case("lock: acquire, release, locked, timeouts", function()
  local l = tether.lock()
  assert(not l:locked())
  assert(l:acquire() == true and l:locked())
  assert(l:acquire(0) == false, "a held lock cannot be taken again")
  assert(l:acquire(0.01) == false)
  T.raises("would wait for ever", l.acquire, l)
  l:release()
  assert(not l:locked())
  T.raises("not locked", l.release, l)
end)

T.case("lock: another thread may release it", function()
  local l = tether.lock()
  l:acquire()
  local t = tether.thread(function() l:release() end)
  assert(t:join())
  assert(not l:locked())
end)

T.case("lock: a waiter gets it when it is released", function()
  local l = tether.lock()
  l:acquire()
  local got = false
  local t = tether.thread(function() l:acquire() got = true l:release() end)
  tether.sleep(0.005)
  assert(not got)
  l:release()
  assert(t:join(T.LIMIT))
  assert(got)
end)

T.case("lock: <close> releases at scope exit, also on error", function()
  local l = tether.lock()
  do
    local held <close> = l:held()
    assert(held == l and l:locked())
  end
  assert(not l:locked())
  local ok = pcall(function()
    local held <close> = l:held()
    error("inside")
  end)
  assert(not ok and not l:locked())
end)

T.case("rlock: re-entrant, owned", function()
  local r = tether.rlock()
  assert(r:acquire() and r:acquire() and r:acquire(0))
  assert(r:locked())
  local t = tether.thread(function() return r:acquire(0), pcall(r.release, r) end)
  local _, got, ok, err = t:join()
  assert(got == false and ok == false and err:find("does not hold", 1, true), err)
  r:release() r:release()
  assert(r:locked())
  r:release()
  assert(not r:locked())
  T.raises("does not hold", r.release, r)
  do
    local a <close> = r:held()
    local b <close> = r:held()
    assert(r:locked())
  end
  assert(not r:locked())
end)

T.case("event: set, clear, wait", function()
  local e = tether.event()
  assert(not e:is_set() and e:wait(0) == false and e:wait(0.01) == false)
  local t = tether.thread(function() return e:wait() end)
  e:set()
  local _, got = t:join(T.LIMIT)
  assert(got == true and e:is_set() and e:wait() == true)
  e:clear()
  assert(not e:is_set())
end)

T.case("condition: producer and consumer", function()
  local c = tether.condition()
  local items = {}
  local consumed = {}
  local consumer = tether.thread(function()
    for _ = 1, 100 do
      local held <close> = c:held()
      while #items == 0 do c:wait() end
      consumed[#consumed + 1] = table.remove(items, 1)
    end
  end)
  for i = 1, 100 do
    local held <close> = c:held()
    items[#items + 1] = i
    c:notify()
  end
  assert(consumer:join(T.LIMIT))
  for i = 1, 100 do assert(consumed[i] == i) end
end)

T.case("condition: wait times out with false; notify_all wakes everyone", function()
  local c = tether.condition(tether.lock())
  do
    local held <close> = c:held()
    assert(c:wait(0.01) == false)
  end
  local waiting, woke = 0, 0
  local ts = {}
  for i = 1, 5 do
    ts[i] = tether.thread(function()
      local held <close> = c:held()
      waiting = waiting + 1
      assert(c:wait(T.LIMIT))
      woke = woke + 1
    end)
  end
  T.wait_for(function() return waiting == 5 end)
  do
    local held <close> = c:held()
    c:notify_all()
  end
  for i = 1, 5 do assert(ts[i]:join(T.LIMIT)) end
  assert(woke == 5)
end)

T.case("condition: notify(n) wakes n", function()
  local c = tether.condition()
  local waiting, woke = 0, 0
  local ts = {}
  for i = 1, 3 do
    ts[i] = tether.thread(function()
      local held <close> = c:held()
      waiting = waiting + 1
      if c:wait(T.LIMIT) then woke = woke + 1 end
    end)
  end
  T.wait_for(function() return waiting == 3 end)
  do local held <close> = c:held() c:notify(2) end
  T.wait_for(function() return woke == 2 end)
  do local held <close> = c:held() c:notify() end
  for i = 1, 3 do assert(ts[i]:join(T.LIMIT)) end
  assert(woke == 3)
end)

T.case("condition: waiting or notifying without the lock is an error", function()
  local c = tether.condition()
  T.raises("lock is not held", c.wait, c, 0)
  T.raises("lock is not held", c.notify, c)
  local r = tether.rlock()
  local c2 = tether.condition(r)
  assert(c2:lock() == r)
  r:acquire() r:acquire()
  c2:wait(0.001) -- releases both levels and takes both back
  assert(r:locked())
  r:release() r:release()
  assert(not r:locked())
end)

T.case("queue: FIFO, nil values, size", function()
  local q = tether.queue()
  for i = 1, 10 do assert(q:put(i)) end
  assert(q:put(nil) and q:size() == 11 and #q == 11)
  for i = 1, 10 do assert(q:get() == i) end
  local v, why = q:get(0)
  assert(v == nil and why == nil, "a nil item is returned as nil, without 'timeout'")
  v, why = q:get(0)
  assert(v == nil and why == "timeout")
  v, why = q:get(0.01)
  assert(v == nil and why == "timeout")
end)

T.case("queue: bounded put blocks, then proceeds", function()
  local q = tether.queue(2)
  assert(q:put(1) and q:put(2))
  assert(q:put(3, 0) == false and q:put(3, 0.01) == false)
  local t = tether.thread(function() return q:put(3) end)
  tether.sleep(0.005)
  assert(q:get() == 1)
  local _, put = t:join(T.LIMIT)
  assert(put == true and q:get() == 2 and q:get() == 3)
end)

T.case("queue: several producers and consumers", function()
  local q = tether.queue(4)
  local total = 0
  local ps, cs = {}, {}
  for p = 1, 3 do
    ps[p] = tether.thread(function() for i = 1, 200 do q:put(i) end end)
  end
  for c = 1, 3 do
    cs[c] = tether.thread(function()
      for _ = 1, 200 do
        -- not `total = total + q:get()`: that reads total before the call,
        -- which may switch threads, and writes it after (a lost update)
        local v = q:get()
        total = total + v
      end
    end)
  end
  for i = 1, 3 do
    local a, b, c = ps[i]:join(T.LIMIT) assert(a, tostring(b) .. tostring(c))
    a, b, c = cs[i]:join(T.LIMIT) assert(a, tostring(b) .. tostring(c))
  end
  assert(total == 3 * (200 * 201 / 2) and q:size() == 0, total .. " " .. q:size())
end)

T.done()
