-- Bad arguments get errors that name the function and the argument, and
-- change nothing.  Also tether.switchinterval and the module's identity.
local tether = require "tether"
local T = require "testlib"

local f = function() end

T.case("thread", function()
  T.raises("bad argument #1 to 'thread' (function expected, got nil)", function() tether.thread(nil) end)
  T.raises("bad argument #1 to 'thread' (function expected, got no value)", function() tether.thread() end)
  T.raises("bad argument #2 to 'thread' (function expected, got number)", function() tether.thread({}, 5) end)
  T.raises("bad argument #1 to 'thread' (unknown option 'bogus')", function() tether.thread({bogus = 1}, f) end)
  T.raises("bad argument #1 to 'thread' (option 'name' must be a string)", function() tether.thread({name = 1}, f) end)
  T.raises("option 'stack_size' must be an integer >= 0", function() tether.thread({stack_size = -1}, f) end)
end)

T.case("thread handles", function()
  local t = tether.thread(f)
  T.raises("bad argument #1 to 'join' (timeout must be a non-negative number of seconds)",
           function() t:join(-1) end)
  T.raises("bad argument #1 to 'join' (number expected, got string)", function() t:join("x") end)
  T.raises("bad argument #1 to 'raise' (value expected)", function() t:raise() end)
  T.raises("bad argument #1 to 'join' (tether.thread expected, got nil)", function() t.join(nil) end)
  T.raises("bad argument #1 to 'alive' (tether.thread expected, got table)", function() t.alive({}) end)
  assert(t:join())
  assert(t.nosuchfield == nil)
end)

T.case("sleep and waits", function()
  T.raises("bad argument #1 to 'sleep' (duration must be a non-negative number of seconds)",
           function() tether.sleep(-1) end)
  T.raises("bad argument #1 to 'sleep' (number expected, got no value)", function() tether.sleep() end)
  T.raises("bad argument #1 to 'sleep' (duration must be", function() tether.sleep(0/0) end)
  local l, e, q = tether.lock(), tether.event(), tether.queue()
  T.raises("bad argument #1 to 'acquire' (timeout must be", function() l:acquire(-0.5) end)
  T.raises("bad argument #1 to 'acquire' (tether.lock expected, got nil)", function() l.acquire(nil) end)
  T.raises("bad argument #1 to 'wait' (number expected, got table)", function() e:wait({}) end)
  T.raises("bad argument #1 to 'put' (value expected)", function() q:put() end)
  T.raises("bad argument #1 to 'queue' (maxsize must be >= 0)", function() tether.queue(-1) end)
  T.raises("bad argument #1 to 'queue' (number expected, got string)", function() tether.queue("x") end)
  T.raises("bad argument #1 to 'condition' (tether.lock or tether.rlock expected, got number)",
           function() tether.condition(5) end)
  T.raises("bad argument #1 to 'notify' (must be >= 0)", function()
    local c = tether.condition()
    local h <close> = c:held()
    c:notify(-1)
  end)
end)

T.case("callback and load", function()
  T.raises("bad argument #1 to 'callback' (malformed signature 'i32(' ", function() tether.callback("i32(", f) end)
  T.raises("malformed signature 'int(int)'", function() tether.callback("int(int)", f) end)
  T.raises("malformed signature 'i32(void,i32)'", function() tether.callback("i32(void,i32)", f) end)
  T.raises("bad argument #2 to 'callback' (function expected, got nil)", function() tether.callback("void()", nil) end)
  T.raises("bad argument #1 to 'load' (string expected, got nil)", function() tether.load(nil) end)
  local err = T.raises("load: ", function() tether.load("/nonexistent/plugin.so") end)
  assert(err:find("/nonexistent/plugin.so", 1, true), err)
end)

T.case("switchinterval", function()
  local default = tether.switchinterval()
  assert(math.abs(default - 0.005) < 1e-9, default)
  assert(math.abs(tether.switchinterval(0.001) - 0.001) < 1e-9)
  assert(math.abs(tether.switchinterval() - 0.001) < 1e-9)
  T.raises("bad argument #1 to 'switchinterval' (interval must be in (0, 10] seconds)",
           function() tether.switchinterval(0) end)
  T.raises("interval must be in (0, 10] seconds", function() tether.switchinterval(11) end)
  tether.switchinterval(default)
end)

T.case("the module", function()
  assert(require "tether" == tether, "required twice, one module")
  assert(type(tether.version) == "string" and tether.version:match("^%d+%.%d+%.%d+$"))
  assert(tostring(tether.Cancelled) == "tether.Cancelled")
  assert(type(tether.clock()) == "number")
  local s = tether.gil_stats()
  assert(math.type(s.acquisitions) == "integer" and s.acquisitions > 0)
end)

T.done()
