-- The plugins written in Rust and Go, loaded by Lua with tether.load: their
-- own threads (std::threads, goroutines) call a Lua callback, each call
-- holding the GIL.  Run as: lua5.4 test_lang_plugins.lua rust|go
-- (tests/lang/CMakeLists.txt), with the plugin's path in
-- TETHER_RUSTWORKERS or TETHER_GOWORKERS.
local tether = require "tether"
local T = require "testlib"

local kind = assert(arg[1], "usage: test_lang_plugins.lua rust|go")
local var = kind == "rust" and "TETHER_RUSTWORKERS" or "TETHER_GOWORKERS"
local path = assert(os.getenv(var), var .. " must name the plugin")
local run = kind == "rust" and "rw_run" or "gw_run"
local name = kind == "rust" and "rustworkers" or "goworkers"

T.case(kind .. ": threads call a Lua callback", function()
  local p = tether.load(path)
  assert(p.name == name, p.name)
  local count, seen = 0, {}
  local cb <close> = tether.callback("void(ptr,i32,i32)", function(_, thread, call)
    count = count + 1 -- only under the GIL: no lost updates
    seen[thread] = (seen[thread] or 0) + 1
    assert(call >= 0)
  end)
  -- p:call holds the GIL; the plugin releases it while its threads run.
  local made = p:call(run, "i64(ptr,ptr,i32,i32)", cb, nil, 4, 25)
  assert(made == 100, made)
  assert(count == 100, count)
  for thread = 0, 3 do assert(seen[thread] == 25, thread) end
  assert(p:call(run, "i64(ptr,ptr,i32,i32)", cb, nil, 0, 25) == -1) -- EINVAL
  assert(p:unload())
end)

T.case(kind .. ": a callback error goes to the excepthook, the threads run on", function()
  local p = tether.load(path)
  local hooked = 0
  local old = tether.excepthook
  tether.excepthook = function() hooked = hooked + 1 end
  local cb <close> = tether.callback("void(ptr,i32,i32)", function() error("boom") end)
  local made = p:call(run, "i64(ptr,ptr,i32,i32)", cb, nil, 2, 5)
  tether.excepthook = old
  assert(made == 10, made)
  assert(hooked == 10, hooked)
  assert(p:unload())
end)

if kind == "go" then
  T.case("go: a token released on another OS thread is refused", function()
    local p = tether.load(path)
    assert(p:call("gw_wrong_thread", "i32()") == -5) -- TETHER_ESTATE
    assert(p:unload())
  end)
end

T.done()
