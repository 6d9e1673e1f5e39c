-- Threads: start, the three shapes of join, status, handles, names.
local tether = require "tether"
local T = require "testlib"

T.case("join returns true and the results", function()
  local t = tether.thread(function(a, b) return a + b, "sum", nil end, 2, 3)
  local ok, s, word, last = t:join()
  assert(ok == true and s == 5 and word == "sum" and last == nil)
  assert(select("#", t:join()) == 4, "every join gets every result")
  assert(t:status() == "done" and not t:alive())
end)

T.case("join returns false, the error and a traceback", function()
  local t = tether.thread(function() error({code = 42}) end)
  local ok, err, tb = t:join()
  assert(ok == false and type(err) == "table" and err.code == 42)
  assert(type(tb) == "string" and tb:find("stack traceback", 1, true), tb)
  assert(t:status() == "error")
  local t2 = tether.thread(function() local function deep() error("boom") end deep() end)
  local _, msg, tb2 = t2:join()
  assert(msg:find("boom", 1, true) and tb2:find("deep", 1, true), tb2)
end)

T.case("join with a timeout returns nil, 'timeout' while the thread runs", function()
  local go = tether.event()
  local t = tether.thread(function() go:wait() return "late" end)
  local ok, why = t:join(0)
  assert(ok == nil and why == "timeout")
  ok, why = t:join(0.01)
  assert(ok == nil and why == "timeout")
  assert(t:alive() and t:status() == "running")
  go:set()
  local done, v = t:join(T.LIMIT)
  assert(done and v == "late")
end)

T.case("threads share upvalues and tables", function()
  local shared = {items = {}}
  local counter = 0
  local function bump() counter = counter + 1 end
  local ts = {}
  for i = 1, 4 do
    ts[i] = tether.thread(function()
      shared.items[i] = {}
      for k = 1, 100 do
        local mine = shared.items[i]
        mine[k] = i
        bump()
      end
    end)
  end
  for i = 1, 4 do assert(ts[i]:join()) end
  assert(counter == 400)
  for i = 1, 4 do assert(#shared.items[i] == 100 and shared.items[i][100] == i) end
end)

T.case("options: name, daemon; defaults", function()
  local t = tether.thread({name = "worker-1", daemon = true}, function()
    return tether.current().name, tether.current().daemon
  end)
  assert(t.name == "worker-1" and t.daemon == true)
  local ok, name, daemon = t:join()
  assert(ok and name == "worker-1" and daemon == true)
  local u = tether.thread(function() end)
  assert(u.name:match("^Thread%-%d+$"), u.name)
  assert(u.daemon == false)
  assert(u:join())
  -- a daemon thread's threads are daemons unless told otherwise
  local parent = tether.thread({daemon = true}, function()
    local c = tether.thread(function() end)
    local d = c.daemon
    c:join()
    return d
  end)
  local _, inherited = parent:join()
  assert(inherited == true)
end)

T.case("ident is the OS thread's, distinct per thread", function()
  local main = tether.current()
  assert(math.type(main.ident) == "integer")
  local t = tether.thread(function() return tether.current().ident end)
  local _, ident = t:join()
  assert(ident == t.ident and ident ~= main.ident)
end)

T.case("current() is the same handle as the one thread() returned", function()
  local seen
  local t = tether.thread(function() seen = tether.current() end)
  t:join()
  assert(seen == t and rawequal(seen, t))
  assert(tether.current() == tether.current())
  assert(tether.current().name == "MainThread")
  assert(tether.current():alive() and tether.current():status() == "running")
end)

T.case("threads() lists the live threads", function()
  local go = tether.event()
  local t = tether.thread({name = "listed"}, function() go:wait() end)
  local names = {}
  for _, h in ipairs(tether.threads()) do names[h.name] = h end
  assert(names.MainThread and names.listed == t)
  go:set()
  t:join()
  for _, h in ipairs(tether.threads()) do assert(h ~= t) end
end)

T.case("a thread cannot join itself, nor the main thread", function()
  local t = tether.thread(function()
    return pcall(function() return tether.current():join() end)
  end)
  local _, ok, err = t:join()
  assert(ok == false and err:find("cannot join itself", 1, true), err)
  T.raises("cannot join itself", function() tether.current():join() end)
  local main = tether.current()
  local u = tether.thread(function() return pcall(main.join, main) end)
  local _, ok2, err2 = u:join()
  assert(ok2 == false and err2:find("not started by tether.thread", 1, true), err2)
end)

T.case("tostring names the thread and its status", function()
  local t = tether.thread({name = "shown"}, function() end)
  t:join()
  assert(tostring(t) == "tether.thread: shown (done)", tostring(t))
end)

T.case("many short threads", function()
  local n = 0
  for i = 1, 200 do
    local t = tether.thread(function(k) n = n + k end, i)
    assert(t:join())
  end
  assert(n == 200 * 201 / 2)
end)

T.case("handles of finished threads are collected", function()
  for i = 1, 50 do tether.thread(function() end):join() end
  collectgarbage()
  collectgarbage()
  -- what matters is that nothing leaks (the sanitizer builds check) and
  -- that new threads still start
  assert(tether.thread(function() return 1 end):join())
end)

T.done()
