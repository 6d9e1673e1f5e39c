-- A tether.callback that C code retains (tether_callback_retain, issue 14
-- P4) outlives Lua's reference: collected by Lua, it still runs the Lua
-- function when C calls it, and its record is freed once C releases it
-- (LeakSanitizer checks that under ASan).  libtether's own retain and
-- release are reached through the pool plugin, which links libtether.
local tether = require "tether"
local T = require "testlib"

local POOL = os.getenv("TETHER_POOL")
assert(POOL, "TETHER_POOL must name the pool plugin")
local pool = tether.load(POOL)
local retain = pool:symbol("tether_callback_retain")
local release = pool:symbol("tether_callback_release")

T.case("cb:handle()", function()
  local cb = tether.callback("void()", function() end)
  local h = cb:handle()
  assert(math.type(h) == "integer" and h ~= 0)
  assert(cb:handle() == h)
  cb:free()
  T.raises("the callback was freed", cb.handle, cb)
end)

T.case("collected by Lua while C holds it, it still runs", function()
  local calls = 0
  local cb = tether.callback("i32(i32)", function(x)
    calls = calls + 1
    return x * 2
  end)
  local h, ptr = cb:handle(), cb:ptr()
  assert(tether.ffi_call(retain, "i32(u64)", h) == 0)
  cb = nil -- luacheck: ignore (the point: Lua's only reference goes)
  collectgarbage()
  collectgarbage()
  for i = 1, 3 do
    assert(tether.ffi_call(ptr, "i32(i32)", 20 + i) == 2 * (20 + i))
  end
  assert(calls == 3)
  assert(tether.ffi_call(release, "i32(u64)", h) == 0) -- the last owner
  tether.callback("void()", function() end):free() -- frees the record now
end)

T.case("freed by cb:free() while C holds it, it still runs", function()
  local got
  local cb = tether.callback("void(i64)", function(x) got = x end)
  local h, ptr = cb:handle(), cb:ptr()
  assert(tether.ffi_call(retain, "i32(u64)", h) == 0)
  cb:free()
  T.raises("the callback was freed", cb.ptr, cb)
  tether.ffi_call(ptr, "void(i64)", 77)
  assert(got == 77)
  assert(tether.ffi_call(release, "i32(u64)", h) == 0)
end)

T.case("the last release on another thread", function()
  local calls = 0
  local cb = tether.callback("i32()", function() calls = calls + 1 return 5 end)
  local h, ptr = cb:handle(), cb:ptr()
  assert(tether.ffi_call(retain, "i32(u64)", h) == 0)
  cb = nil -- luacheck: ignore
  collectgarbage()
  collectgarbage()
  local t = tether.thread(function()
    assert(tether.ffi_call(ptr, "i32()") == 5)
    return tether.ffi_call(release, "i32(u64)", h)
  end)
  local ok, rc = t:join()
  assert(ok == true and rc == 0, tostring(rc))
  assert(calls == 1)
  collectgarbage() -- a callback's __gc frees the record the release left
end)

-- Released by C after the Lua state closed: tests/lua/host.c (lua.host).

T.done()
