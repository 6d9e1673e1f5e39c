-- tether.callback and tether.load: Lua functions as C function pointers
-- that native threads call, and calls into plugins.  The ticker plugin
-- (plugins/ticker) starts native threads that call a callback.
local tether = require "tether"
local T = require "testlib"

local TICKER = os.getenv("TETHER_TICKER")
assert(TICKER, "TETHER_TICKER must name the ticker plugin")
local ticker = tether.load(TICKER)

local hooked, hooked_lock = {}, tether.lock()
tether.excepthook = function(t, err, tb)
  local entry = {name = t.name, err = err, tb = tb}
  local held <close> = hooked_lock:held() -- native threads report at once
  hooked[#hooked + 1] = entry
end

-- Runs ticker: nthreads native threads x ticks calls of cb, interval_us apart.
local function tick(cb, nthreads, ticks, interval_us)
  assert(ticker:call("ticker_start", "i32(ptr,ptr,i32,i32,i32)", cb, nil,
                     nthreads, ticks, interval_us or 0) == 0)
  return ticker:call("ticker_wait", "i32(i64)", -1)
end

T.case("load: name, version, symbol", function()
  assert(ticker.name == "ticker" and ticker.version == "1.0.0")
  assert(type(ticker:symbol("ticker_start")) == "userdata")
  T.raises("symbol: ", ticker.symbol, ticker, "no_such_symbol")
  T.raises("the signature takes 1 argument(s), got 0", ticker.call, ticker, "ticker_wait", "i32(i64)")
  T.raises("bad argument #3 to 'call' (integer expected)",
           function() ticker:call("ticker_wait", "i32(i64)", "x") end)
  -- called as a plain function, the error still names it (issue 14 P9)
  T.raises("bad argument #3 to 'call' (integer expected)",
           ticker.call, ticker, "ticker_wait", "i32(i64)", "x")
  T.raises("bad argument #3 to 'ffi_call' (integer expected)",
           tether.ffi_call, ticker:symbol("ticker_wait"), "i32(i64)", "x")
end)

T.case("a temporary callback given to p:call lives while the plugin is loaded", function()
  -- Nothing in Lua refers to the callback once ticker_start returns, but
  -- the plugin's threads call it afterwards (issue 14 P4).
  local total = 0
  assert(ticker:call("ticker_start", "i32(ptr,ptr,i32,i32,i32)",
                     tether.callback("void(ptr,i32,i32)", function() total = total + 1 end),
                     nil, 2, 300, 50) == 0)
  for _ = 1, 3 do collectgarbage() end
  assert(ticker:call("ticker_wait", "i32(i64)", -1) == 0)
  assert(total == 600, total)
end)

T.case("ticker: native threads call a Lua callback 10,000 times", function()
  local per_thread, total = {}, 0
  local cb = tether.callback("void(ptr,i32,i32)", function(ud, thread, n)
    assert(ud == nil and math.type(thread) == "integer")
    per_thread[thread] = (per_thread[thread] or 0) + 1
    total = total + 1
  end)
  local before = ticker:call("ticker_delivered", "i64()")
  assert(tick(cb, 4, 2500) == 0)
  assert(total == 10000, total)
  for i = 0, 3 do assert(per_thread[i] == 2500, tostring(per_thread[i])) end
  assert(ticker:call("ticker_delivered", "i64()") - before == 10000)
  cb:free()
end)

T.case("callbacks and Lua threads share state under the GIL", function()
  local shared = {n = 0}
  local cb = tether.callback("void(ptr,i32,i32)", function() shared.n = shared.n + 1 end)
  local workers = {}
  for i = 1, 2 do
    workers[i] = tether.thread(function() for _ = 1, 100000 do shared.n = shared.n + 1 end end)
  end
  assert(tick(cb, 3, 1000) == 0)
  for i = 1, 2 do assert(workers[i]:join()) end
  assert(shared.n == 203000, shared.n)
  cb:free()
end)

T.case("every signature type round-trips through a callback", function()
  local cases = {
    {"i8", -100}, {"u8", 250}, {"i16", -30000}, {"u16", 65000},
    {"i32", -2000000000}, {"u32", 4000000000}, {"i64", math.mininteger},
    {"u64", -1}, {"f32", 1.5}, {"f64", 1 / 3},
  }
  for _, c in ipairs(cases) do
    local ty, v = c[1], c[2]
    local cb <close> = tether.callback(ty .. "(" .. ty .. ")", function(x) return x end)
    local got = tether.ffi_call(cb:ptr(), ty .. "(" .. ty .. ")", v)
    assert(got == v, ty .. ": " .. tostring(got))
  end
  local p <close> = tether.callback("ptr(ptr,str)", function(p, s)
    assert(s == "text")
    return p
  end)
  local marker = p:ptr()
  assert(tether.ffi_call(p, "ptr(ptr,str)", marker, "text") == marker)
  local none <close> = tether.callback("ptr(str)", function(s) assert(s == nil) end)
  assert(tether.ffi_call(none, "ptr(str)", nil) == nil)
  T.raises("integer out of range", tether.ffi_call, p, "i8(i8)", 300)
  T.raises("a callback cannot return str", tether.callback, "str()", function() end)
end)

T.case("an error in a callback goes to the excepthook; C gets zero", function()
  local before = #hooked
  local cb <close> = tether.callback("i32(i32)", function(x)
    if x > 0 then error("callback failed " .. x) end
    return 7
  end)
  assert(tether.ffi_call(cb, "i32(i32)", 0) == 7)
  assert(tether.ffi_call(cb, "i32(i32)", 5) == 0)
  assert(#hooked == before + 1)
  local h = hooked[#hooked]
  assert(tostring(h.err):find("callback failed 5", 1, true) and h.tb:find("stack traceback", 1, true))
  local bad <close> = tether.callback("i32()", function() return "not a number" end)
  assert(tether.ffi_call(bad, "i32()") == 0)
  assert(tostring(hooked[#hooked].err):find("callback returned string: integer expected", 1, true))
end)

T.case("errors in callbacks on native threads are reported per call", function()
  local before = #hooked
  local cb = tether.callback("void(ptr,i32,i32)", function(_, thread, n)
    if n % 10 == 0 then error("tick " .. n) end
  end)
  assert(tick(cb, 2, 30) == 0)
  assert(#hooked - before == 6, #hooked - before)
  assert(hooked[#hooked].name:match("^Dummy%-%d+$"), hooked[#hooked].name)
  cb:free()
end)

T.case("a thread waiting in a plugin call can be cancelled", function()
  local hold, count = tether.event(), 0
  -- the run cannot end before `hold` is set: the cancel meets the waiter
  local cb = tether.callback("void(ptr,i32,i32)", function() hold:wait() count = count + 1 end)
  assert(ticker:call("ticker_start", "i32(ptr,ptr,i32,i32,i32)", cb, nil, 1, 3, 0) == 0)
  local ready = tether.event()
  local t = tether.thread(function()
    ready:set()
    return ticker:call("ticker_wait", "i32(i64)", -1)
  end)
  assert(ready:wait(T.LIMIT))
  tether.sleep(0.01) -- usually lets it block in ticker_wait; correctness does not depend on it
  t:cancel()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  hold:set()
  assert(ticker:call("ticker_wait", "i32(i64)", -1) == 0)
  assert(count == 3)
  cb:free()
end)

T.case("a callback can be freed, also by <close>, and only once", function()
  local cb = tether.callback("void()", function() end)
  assert(type(cb:ptr()) == "userdata")
  cb:free()
  cb:free()
  T.raises("the callback was freed", cb.ptr, cb)
  do local c2 <close> = tether.callback("void()", function() end) end
  collectgarbage()
end)

T.case("a callback that frees itself while it runs", function()
  local cb
  cb = tether.callback("i32()", function() cb:free() return 3 end)
  local ptr = cb:ptr()
  assert(tether.ffi_call(ptr, "i32()") == 3)
end)

T.case("daemon-like native threads inside callbacks at exit", function()
  local status, out = T.run_lua(string.format([[
    local tether = require "tether"
    local p = tether.load(%q)
    local spin = tether.callback("void(ptr,i32,i32)", function(_, thread)
      if thread == 0 then while true do end end -- never returns by itself
    end)
    assert(p:call("ticker_start", "i32(ptr,ptr,i32,i32,i32)", spin, nil, 2, 1000, 100) == 0)
    tether.sleep(0.02)
    print("main ends")
  ]], TICKER))
  assert(status == 0 and out:find("main ends", 1, true), out)
end)

T.case("unload", function()
  local p = tether.load(TICKER) -- one more reference to the same library
  assert(p.name == "ticker")
  assert(p:unload() == true)
  T.raises("the plugin was unloaded", p.call, p, "ticker_delivered", "i64()")
  assert(ticker:call("ticker_delivered", "i64()") >= 10000, "the first load is still there")
end)

T.done()
