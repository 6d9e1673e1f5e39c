-- tether.excepthook: an error that ends a thread nobody joins.
local tether = require "tether"
local T = require "testlib"

local calls, calls_lock = {}, tether.lock()
tether.excepthook = function(t, err, tb)
  local entry = {name = t.name, status = t:status(), err = err, tb = tb}
  local held <close> = calls_lock:held() -- hooks may run on several threads
  calls[#calls + 1] = entry
end

local function collect()
  collectgarbage()
  collectgarbage()
end

T.case("an unjoined thread's error goes to the hook, once", function()
  local before = #calls
  do
    local t = tether.thread({name = "lost"}, function()
      local function failing() error("nobody joins me") end
      failing()
    end)
  end
  collect()
  T.wait_for(function() return #calls > before end, "the hook")
  local c = calls[#calls]
  assert(c.name == "lost" and c.status == "error", c.name)
  assert(tostring(c.err):find("nobody joins me", 1, true))
  assert(c.tb:find("stack traceback", 1, true) and c.tb:find("failing", 1, true), c.tb)
  collect()
  tether.sleep(0.01)
  assert(#calls == before + 1, "reported twice")
end)

T.case("the hook is called when the last handle goes, not before", function()
  local before = #calls
  local t = tether.thread({name = "kept"}, function() error("late") end)
  T.wait_for(function() return not t:alive() end)
  collect()
  assert(#calls == before, "reported while a handle could still join")
  t = nil
  collect()
  assert(#calls == before + 1 and calls[#calls].name == "kept")
end)

T.case("a joined error is not reported", function()
  local before = #calls
  do
    local t = tether.thread(function() error("joined") end)
    assert(t:join() == false)
  end
  collect()
  assert(#calls == before)
end)

T.case("neither is a cancelled thread, nor one that ended well", function()
  local before = #calls
  do
    local ready = tether.event()
    local t = T.spinner(ready)
    assert(ready:wait(T.LIMIT))
    t:cancel()
    T.wait_for(function() return not t:alive() end)
    local u = tether.thread(function() return 1 end)
    T.wait_for(function() return not u:alive() end)
  end
  collect()
  assert(#calls == before)
end)

T.case("the default hook prints the thread, the error and the traceback", function()
  local status, out = T.run_lua([[
    local tether = require "tether"
    do tether.thread({name = "noisy"}, function() error("printed error") end) end
    collectgarbage() collectgarbage()
  ]])
  assert(status == 0, out)
  assert(out:find("tether: exception in thread 'noisy'", 1, true), out)
  assert(out:find("printed error", 1, true) and out:find("stack traceback", 1, true), out)
end)

T.case("an error kept unjoined until exit is reported at exit", function()
  local status, out = T.run_lua([[
    local tether = require "tether"
    keep = tether.thread({name = "kept-to-the-end"}, function() error("at exit") end)
  ]])
  assert(status == 0, out)
  assert(out:find("'kept-to-the-end': ", 1, true) and out:find("at exit", 1, true), out)
end)

T.case("a hook that fails is reported, and nothing breaks", function()
  local status, out = T.run_lua([[
    local tether = require "tether"
    tether.excepthook = function() error("hook broke") end
    do tether.thread(function() error("original") end) end
    collectgarbage() collectgarbage()
    tether.sleep(0.05)
    collectgarbage()
    print("still running")
  ]])
  assert(status == 0, out)
  assert(out:find("tether.excepthook failed", 1, true) and out:find("hook broke", 1, true), out)
  assert(out:find("original", 1, true) and out:find("still running", 1, true), out)
end)

T.done()
