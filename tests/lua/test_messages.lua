-- Messages that say what is wrong (issue 13, D13): an array entry in an
-- options table, a callable table as the thread function, thread names
-- that cannot be kept whole, and what the excepthook machinery prints for
-- an error value that cannot be turned into a string.
local tether = require "tether"
local T = require "testlib"

local f = function() end

T.case("an options table with an entry that is not a named field", function()
  local before = #tether.threads()
  local err = T.raises("options are named fields (name, daemon, stack_size); got [1] = 'x'",
                       tether.thread, {"x"}, f)
  assert(not err:find("'?'", 1, true), err)
  T.raises("got [true] = 5", tether.thread, {[true] = 5}, f)
  local long = string.rep("0123456789", 7)
  T.raises("got [2.5] = '" .. long:sub(1, 60) .. "...' (70 bytes)", tether.thread, {[2.5] = long}, f)
  T.raises("got [1] = 'a...' (3 bytes)", tether.thread, {"a\0b"}, f)
  local i = tether.interp()
  T.raises("options are named fields (name, daemon, stack_size); got [1] = 'x'",
           function() i:thread({"x"}, f) end)
  assert(i:close(T.LIMIT))
  assert(#tether.threads() == before, "a thread started anyway")
  -- string keys keep their message
  T.raises("bad argument #1 to 'thread' (unknown option 'bogus')", function() tether.thread({bogus = 1}, f) end)
end)

T.case("a callable table is the thread function, not the options", function()
  local calls = setmetatable({}, {__call = function(self, a, b) return "called", a + b end})
  local t = tether.thread(calls, 2, 3)
  local ok, what, sum = t:join(T.LIMIT)
  assert(ok and what == "called" and sum == 5, tostring(what))
  t = tether.thread({name = "callable"}, calls, 1, 1)
  assert(t.name == "callable" and select(3, t:join(T.LIMIT)) == 2)
  T.raises("bad argument #2 to 'thread' (function expected, got table)",
           function() tether.thread({}, {}) end)
  T.raises("bad argument #1 to 'thread' (function expected, got number)", function() tether.thread(5) end)
  local i = tether.interp()
  T.raises("a callable table or userdata cannot be copied to another interpreter; pass a Lua function",
           function() i:thread(calls) end)
  T.raises("a callable table or userdata cannot be copied to another interpreter; pass a Lua function",
           function() i:thread({name = "x"}, calls) end)
  assert(i:close(T.LIMIT))
end)

T.case("thread names are kept whole or refused", function()
  local before = #tether.threads()
  local longest = string.rep("n", 127)
  local t = tether.thread({name = longest}, f)
  assert(t.name == longest, #t.name)
  assert(t:join(T.LIMIT))
  T.raises("option 'name' is 128 bytes long; the limit is 127", tether.thread, {name = longest .. "x"}, f)
  T.raises("option 'name' must not contain a NUL byte", tether.thread, {name = "a\0b"}, f)
  local i = tether.interp()
  T.raises("option 'name' must not contain a NUL byte", function() i:thread({name = "a\0b"}, f) end)
  local it = i:thread({name = longest}, f)
  assert(it.name == longest and it:join(T.LIMIT))
  assert(i:close(T.LIMIT))
  assert(#tether.threads() == before, "a thread started anyway")
end)

-- An error value whose __tostring fails, in a thread nobody joins.
local script = [[
local tether = require "tether"
local bad = setmetatable({}, {__tostring = function() error("tostring fails") end})
%s
local t = tether.thread({name = "reported"}, function() error(bad) end)
t = nil
for _ = 1, 50 do
  collectgarbage()
  tether.sleep(0.01)
end
]]

T.case("the default excepthook shows an error value whose __tostring fails", function()
  local status, out = T.run_lua(script:format(""))
  assert(status == 0, out)
  assert(out:find("tether: exception in thread 'reported': table: 0x", 1, true)
         or out:find("tether: exception in thread 'reported': table: ", 1, true), out)
  assert(not out:find("?", 1, true) and not out:find("failed", 1, true), out)
end)

T.case("a failing excepthook: its error and the thread's are both shown", function()
  local status, out = T.run_lua(script:format(
    "tether.excepthook = function() error(setmetatable({}, {__tostring = function() return 'hook error' end})) end"))
  assert(status == 0, out)
  assert(out:find("tether: tether.excepthook failed (hook error) while reporting: table: ", 1, true), out)
  assert(not out:find("?", 1, true), out)
  status, out = T.run_lua(script:format("tether.excepthook = function() error(bad) end"))
  assert(status == 0, out)
  assert(out:find("tether: tether%.excepthook failed %(table: [^)]+%) while reporting: table: "), out)
  assert(not out:find("?", 1, true), out)
end)

T.done()
