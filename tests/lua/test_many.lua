-- Many values at once: functions that push one value per thread or per
-- result must make room on the Lua stack first (issue 13, D2 and D3).
local tether = require "tether"
local T = require "testlib"

-- Lua guarantees a C function LUA_MINSTACK (20) free slots; a few hundred
-- values past that overran the stack (a segfault, or a hang).
local N_THREADS = 300

T.case("tether.threads() with " .. N_THREADS .. " threads alive", function()
  local go = tether.event()
  local mine = {}
  for i = 1, N_THREADS do
    mine[i] = tether.thread({name = "many-" .. i}, function() go:wait() end)
  end
  local all = tether.threads()
  assert(#all >= N_THREADS + 1, "only " .. #all .. " threads listed")
  local seen, named = {}, 0
  for _, t in ipairs(all) do
    assert(t:alive(), "a listed thread is not alive")
    assert(not seen[t], "a thread listed twice")
    seen[t] = true
    if t.name:match("^many%-%d+$") then named = named + 1 end
  end
  assert(named == N_THREADS, named)
  -- The handles are the cached ones: == and the same object.
  local by_name = {}
  for _, t in ipairs(all) do by_name[t.name] = t end
  for i = 1, N_THREADS do assert(rawequal(by_name["many-" .. i], mine[i])) end
  assert(rawequal(by_name.MainThread, tether.current()))
  go:set()
  for i = 1, N_THREADS do assert(mine[i]:join(T.LIMIT)) end
  collectgarbage()
end)

T.case("tether.threads() from a thread, many times over", function()
  local go = tether.event()
  local ts = {}
  for i = 1, 64 do ts[i] = tether.thread(function() go:wait() end) end
  local t = tether.thread(function()
    local n = 0
    for _ = 1, 20 do n = n + #tether.threads() end
    return n
  end)
  local ok, n = t:join(T.LIMIT)
  assert(ok and n >= 20 * 66, tostring(n))
  go:set()
  for i = 1, #ts do assert(ts[i]:join(T.LIMIT)) end
end)

-- A thread listed before tether_thread_start returned in its creator had a
-- handle without its record cached; the creator then got that handle from
-- the cache and its join lost the results (about one start in ten).
T.case("tether.threads() in a thread that has just started", function()
  for i = 1, 300 do
    local t = tether.thread(function(k) tether.threads() return k end, i)
    local ok, k = t:join(T.LIMIT)
    assert(ok == true and k == i, "start " .. i .. ": join returned " .. tostring(ok) .. ", " .. tostring(k))
    assert(t:status() == "done")
  end
end)

-- Half of Lua's stack limit (LUAI_MAXSTACK, 1,000,000 slots): the
-- interpreter thread's bootstrap copied every result once more, past it.
local N_RESULTS = 500000

local function many()
  local t = {}
  for i = 1, 500000 do t[i] = i end
  return table.unpack(t)
end

T.case("i:thread returning " .. N_RESULTS .. " values", function()
  local i = tether.interp()
  local t = i:thread(many)
  local r = table.pack(t:join(T.LIMIT * 5))
  assert(r[1] == true, tostring(r[2]))
  assert(r.n == N_RESULTS + 1, r.n)
  assert(r[2] == 1 and r[N_RESULTS + 1] == N_RESULTS)
  r = nil
  assert(i:close(T.LIMIT))
end)

T.case("i:thread raising with a value that cannot be copied, many results", function()
  local i = tether.interp()
  local t = i:thread(function()
    local t = {}
    for k = 1, 500000 do t[k] = k end
    t[250000] = coroutine.create(print) -- not copyable
    return table.unpack(t)
  end)
  local ok, err = t:join(T.LIMIT * 5)
  assert(ok == false and tostring(err):find("cannot copy", 1, true), tostring(err))
  assert(i:close(T.LIMIT))
end)

T.case("tether.thread returning " .. N_RESULTS .. " values", function()
  local t = tether.thread(many)
  local r = table.pack(t:join(T.LIMIT * 5))
  assert(r[1] == true and r.n == N_RESULTS + 1 and r[N_RESULTS + 1] == N_RESULTS)
end)

T.case("tether.deferred returning " .. N_RESULTS .. " values", function()
  local r = table.pack(tether.deferred(many))
  assert(r.n == N_RESULTS and r[N_RESULTS] == N_RESULTS)
end)

T.done()
