-- stack_size: a size too small for Lua's own C nesting limit is refused
-- with a clear error and starts nothing; the smallest size accepted holds
-- the deepest nestings of Lua's library (issue 13, D8).
local tether = require "tether"
local T = require "testlib"

-- What a thread must survive: Lua's C nesting limit (200 levels) reached
-- through pcall, xpcall with a traceback handler, string.gsub callbacks
-- (the heaviest frames of the library), __tostring inside string.format,
-- and coroutines; plus a wait and hook switches at the bottom of the
-- deepest pcall nesting (a spinner keeps asking for the GIL).
local function deepest()
  local function p(n) local ok, e = pcall(p, n + 1) if not ok then return n end return e end
  local function x(n)
    local ok, e = xpcall(x, debug.traceback, n + 1)
    if not ok then return n end
    return e
  end
  local function s(n)
    local ok, e = pcall(s, n + 1)
    if not ok then tether.sleep(0.001) return n end
    return e
  end
  local levels = p(1)
  assert(levels > 150, levels)
  assert(x(1) > 150)
  assert(s(1) > 150)
  local function g(str) return (string.gsub(str, "a", g)) end
  local ok, err = pcall(g, "a")
  assert(not ok and tostring(err):find("stack overflow", 1, true), tostring(err))
  local mt = {}
  mt.__tostring = function(o) return string.format("%s.", o.next or "") end
  local chain = setmetatable({}, mt)
  for _ = 1, 250 do chain = setmetatable({next = chain}, mt) end
  ok, err = pcall(string.format, "%s", chain)
  assert(not ok and tostring(err):find("stack overflow", 1, true), tostring(err))
  local function r(n) return coroutine.wrap(function() return r(n + 1) end)() end
  ok, err = pcall(r, 1)
  assert(not ok and tostring(err):find("stack overflow", 1, true), tostring(err))
  return levels
end

-- The smallest size accepted, as the error for a smaller one says.
local MIN
T.case("a stack_size too small for Lua is refused, clearly, and starts nothing", function()
  local before = #tether.threads()
  for _, size in ipairs({64 * 1024, 128 * 1024, 200 * 1024, 16 * 1024, 1}) do
    local ok, err = pcall(tether.thread, {stack_size = size}, deepest)
    if ok then -- before the fix: accepted, and the thread crashed the process
      err:join()
      error("stack_size " .. size .. " accepted")
    end
    assert(err:find("bad argument #1 to 'tether.thread' (option 'stack_size' must be 0 (the default) or at least ", 1, true), err)
    assert(err:find("got " .. size .. ")", 1, true), err)
    MIN = tonumber(err:match("at least (%d+) bytes"))
  end
  assert(MIN and MIN >= 256 * 1024, tostring(MIN))
  assert(#tether.threads() == before)
  T.raises("option 'stack_size' must be 0 (the default) or at least", tether.thread, {stack_size = MIN - 1}, deepest)
  T.raises("option 'stack_size' must be an integer >= 0", tether.thread, {stack_size = -1}, deepest)
  T.raises("option 'stack_size' must be an integer >= 0", tether.thread, {stack_size = 1.5}, deepest)
end)

T.case("the smallest stack_size accepted holds Lua's deepest nestings", function()
  local ready = tether.event()
  local spinner = T.spinner(ready, {daemon = true})
  ready:wait()
  local t = tether.thread({stack_size = MIN}, deepest)
  local ok, levels = t:join(T.LIMIT * 5)
  assert(ok, tostring(levels))
  assert(levels > 150)
  spinner:cancel()
  assert(spinner:join(T.LIMIT) == false)
  t = tether.thread({stack_size = 0}, deepest) -- 0: the default
  assert(t:join(T.LIMIT * 5))
end)

T.case("i:thread checks stack_size the same way", function()
  local i = tether.interp()
  T.raises("option 'stack_size' must be 0 (the default) or at least", function()
    i:thread({stack_size = 64 * 1024}, function() end)
  end)
  local t = i:thread({stack_size = MIN}, function()
    local function p(n) local ok, e = pcall(p, n + 1) if not ok then return n end return e end
    local function g(str) return (string.gsub(str, "a", g)) end
    return p(1), pcall(g, "a")
  end)
  local ok, levels, gok = t:join(T.LIMIT * 5)
  assert(ok and levels > 150 and gok == false, tostring(levels))
  assert(i:close(T.LIMIT))
end)

T.done()
