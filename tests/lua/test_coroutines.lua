-- The module's coroutine.resume/wrap/close behave like the standard ones,
-- and keep track of the coroutine each thread runs, so that the GIL is
-- handed over from inside coroutines too.
local tether = require "tether"
local T = require "testlib"

T.case("resume: values in and out, yields, death", function()
  local co = coroutine.create(function(a, b)
    local c = coroutine.yield(a + b)
    local d, e = coroutine.yield(c * 2)
    return d .. e
  end)
  local ok, v = coroutine.resume(co, 1, 2)
  assert(ok and v == 3)
  ok, v = coroutine.resume(co, 5)
  assert(ok and v == 10)
  ok, v = coroutine.resume(co, "x", "y")
  assert(ok and v == "xy" and coroutine.status(co) == "dead")
  ok, v = coroutine.resume(co)
  assert(not ok and v == "cannot resume dead coroutine", v)
end)

T.case("resume: errors come back as false, message", function()
  local co = coroutine.create(function() error("inside") end)
  local ok, err = coroutine.resume(co)
  assert(not ok and err:find("inside", 1, true))
  local me = coroutine.running()
  ok, err = coroutine.resume(me)
  assert(not ok and err == "cannot resume non-suspended coroutine", err)
  T.raises("bad argument #1 to 'resume' (coroutine expected", function() coroutine.resume(5) end)
end)

T.case("wrap: errors propagate with their position", function()
  local f = coroutine.wrap(function() coroutine.yield(1) error("wrapped") end)
  assert(f() == 1)
  local err = T.raises("wrapped", f)
  assert(err:find("test_coroutines.lua", 1, true), err)
  T.raises("cannot resume dead coroutine", f)
  local g = coroutine.wrap(function(...) return select("#", ...), ... end)
  local n, a, b = g(nil, 2)
  assert(n == 2 and a == nil and b == 2)
end)

T.case("close: runs pending to-be-closed variables", function()
  local closed = false
  local co = coroutine.create(function()
    local x <close> = setmetatable({}, {__close = function() closed = true end})
    coroutine.yield()
  end)
  coroutine.resume(co)
  assert(coroutine.close(co) == true and closed)
  assert(coroutine.status(co) == "dead")
  local failing = coroutine.create(function()
    local x <close> = setmetatable({}, {__close = function() error("in close") end})
    coroutine.yield()
  end)
  coroutine.resume(failing)
  local ok, err = coroutine.close(failing)
  assert(ok == false and err:find("in close", 1, true), tostring(err))
  T.raises("cannot close a running coroutine", coroutine.close, coroutine.running())
end)

T.case("a coroutine made in one thread can be resumed in another", function()
  local co = coroutine.create(function(x)
    while true do x = coroutine.yield(x + 1) end
  end)
  assert(select(2, coroutine.resume(co, 1)) == 2)
  local t = tether.thread(function() return select(2, coroutine.resume(co, 10)) end)
  local _, v = t:join()
  assert(v == 11)
  assert(select(2, coroutine.resume(co, 100)) == 101)
end)

T.case("the GIL is handed over from a busy coroutine of a worker", function()
  local stop, n = false, 0
  local t = tether.thread(function()
    coroutine.wrap(function() while not stop do n = n + 1 end end)()
  end)
  T.wait_for(function() return n > 1000 end, "the worker") -- needs the GIL back
  local before = n
  T.wait_for(function() return n > before end, "the worker again")
  stop = true
  assert(t:join(T.LIMIT))
end)

T.case("and from a busy coroutine of the main thread", function()
  local ticks = 0
  local t = tether.thread(function() for _ = 1, 50 do ticks = ticks + 1 tether.sleep(0) end end)
  local co = coroutine.wrap(function()
    local inner = coroutine.wrap(function() while ticks < 50 do end end)
    inner()
  end)
  co() -- spins until the worker, which needs the GIL, has ticked 50 times
  assert(t:join(T.LIMIT))
end)

T.case("raise(value) passes out of a coroutine like a cancel", function()
  local ready = tether.event()
  local token = {}
  local t = tether.thread(function()
    local ok, err = coroutine.resume(coroutine.create(function() ready:set() while true do end end))
    return "resume returned", ok, err
  end)
  assert(ready:wait(T.LIMIT))
  t:raise(token)
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and rawequal(err, token), tostring(err))
end)

T.case("an ordinary error equal to nothing async stays a return value", function()
  local t = tether.thread(function()
    local ok, err = coroutine.resume(coroutine.create(function() error("plain", 0) end))
    return ok, err
  end)
  local _, ok, err = t:join()
  assert(ok == false and err == "plain")
end)

T.case("isyieldable, running, status are untouched", function()
  assert(not coroutine.isyieldable())
  local co
  co = coroutine.create(function()
    assert(coroutine.isyieldable() and coroutine.running() == co)
    assert(coroutine.status(co) == "running")
  end)
  assert(coroutine.resume(co))
  local t = tether.thread(function() return coroutine.isyieldable() end)
  local _, y = t:join()
  assert(y == false, "a thread's own coroutine is not yieldable")
end)

T.done()
