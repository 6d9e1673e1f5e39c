--[[
test_luajit.lua - libtether from LuaJIT's ffi: no C compiler involved.

The declarations come from TETHER_CDEF, which the build generates from
tether.h with abi/tether_header.py (the same model the abi.types test
checks against the C compiler), so they cannot drift from the header.

A LuaJIT state may only ever run on one OS thread at a time, and a
callback runs on the state that made it.  So every thread body here gets a
lua_State of its own (made through the C API that the luajit executable
exports), and the states share nothing but plain C memory: a uint64_t block
passed as the thread's argument.  tether's GIL is what orders the threads;
LuaJIT's states keep them apart.

Environment (set by CTest): TETHER_LIB, TETHER_CDEF, TETHER_MAP.
]]

local ffi = require "ffi"

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local LIB = assert(os.getenv("TETHER_LIB"), "TETHER_LIB is not set")
local CDEF = slurp(assert(os.getenv("TETHER_CDEF"), "TETHER_CDEF is not set"))
local MAP = slurp(assert(os.getenv("TETHER_MAP"), "TETHER_MAP is not set"))
ffi.cdef(CDEF)
local T = ffi.load(LIB)

ffi.cdef [[
typedef struct lua_State lua_State;
lua_State *luaL_newstate(void);
void luaL_openlibs(lua_State *L);
int luaL_loadstring(lua_State *L, const char *s);
int lua_pcall(lua_State *L, int nargs, int nresults, int errfunc);
double lua_tonumber(lua_State *L, int idx);
const char *lua_tolstring(lua_State *L, int idx, size_t *len);
void lua_close(lua_State *L);
typedef unsigned long pthread_t;
int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *), void *arg);
int pthread_join(pthread_t t, void **ret);
]]
local C = ffi.C

local scale = tonumber(os.getenv("TETHER_TEST_TIMEOUT_SCALE") or "1")
-- A deadline for waits that should end at once; never a timing assertion.
local DEADLINE = 60e9 * scale

local function check(rc, what)
  if rc ~= T.TETHER_OK then
    error(string.format("%s: %s: %s", what, ffi.string(T.tether_status_name(rc)),
                        ffi.string(T.tether_last_error())), 2)
  end
end

local function last_error() return ffi.string(T.tether_last_error()) end

-- ---------------------------------------------------------------------------
-- Bodies in states of their own
-- ---------------------------------------------------------------------------

-- Runs in each new state: the same declarations, the same library, and a
-- wrapper so that a Lua error never unwinds into C.
local PRELUDE = string.format([[
local ffi = require "ffi"
ffi.cdef(%q)
T = ffi.load(%q)
local function guarded(body, fail)
  return function(arg)
    local ok, rc = pcall(body, ffi.cast("uint64_t *", arg))
    if ok then return rc end
    io.stderr:write("body failed: ", tostring(rc), "\n")
    return fail
  end
end
]], CDEF, LIB)

local states = {}

-- Makes a C function pointer of type `ctype` that runs `body_src` (a Lua
-- function expression taking the shared uint64_t block) in a new state.
local function callback(ctype, body_src, fail)
  local L = C.luaL_newstate()
  C.luaL_openlibs(L)
  states[#states + 1] = L
  local chunk = PRELUDE .. string.format(
    "CB = ffi.cast(%q, guarded(%s, %s))\n" ..
    "return tonumber(ffi.cast('uintptr_t', CB))", ctype, body_src, fail)
  if C.luaL_loadstring(L, chunk) ~= 0 or C.lua_pcall(L, 0, 1, 0) ~= 0 then
    error(ffi.string(C.lua_tolstring(L, -1, nil)))
  end
  return ffi.cast(ctype, ffi.cast("uintptr_t", C.lua_tonumber(L, -1)))
end

-- Closes the states of finished bodies (their threads were joined).
local function close_states()
  for i = #states, 1, -1 do
    C.lua_close(states[i])
    states[i] = nil
  end
end

local function thread_body(src) return callback("tether_thread_fn", src, "-1") end

-- ---------------------------------------------------------------------------
-- The runtime
-- ---------------------------------------------------------------------------

local function new_runtime()
  local rt, interp = ffi.new("tether_runtime[1]"), ffi.new("tether_interp[1]")
  check(T.tether_runtime_create(nil, rt), "tether_runtime_create")
  check(T.tether_runtime_main_interp(rt[0], interp), "main_interp")
  return rt[0], interp[0]
end

local function start(interp, fn, shared, name)
  local opts = ffi.new("tether_thread_opts", {size = ffi.sizeof("tether_thread_opts"),
                                              name = name})
  local t = ffi.new("tether_thread[1]")
  check(T.tether_thread_start(interp, fn, shared, opts, t), "tether_thread_start")
  return t[0]
end

local function new_event()
  local e = ffi.new("tether_event[1]")
  check(T.tether_event_new(e), "tether_event_new")
  return e[0]
end

-- ---------------------------------------------------------------------------
-- Tests
-- ---------------------------------------------------------------------------

local tests = {}

function tests.every_version_script_symbol_resolves()
  local n = 0
  local map = MAP:gsub("/%*.-%*/", "")
  for block in map:gmatch("{(.-)}") do
    local global = block:match("global:(.-)local:") or block:match("global:(.*)")
    for name in global:gmatch("([%w_]+);") do
      assert(pcall(function() return T[name] end), name .. " does not resolve")
      n = n + 1
    end
  end
  assert(n > 50, "too few names in the version script: " .. n)
  assert(T.tether_abi_version() == T.TETHER_ABI_VERSION)
  assert(ffi.string(T.tether_status_name(T.TETHER_ETIMEDOUT)) == "ETIMEDOUT")
end

function tests.threads_run_and_join(interp)
  local shared = ffi.new("uint64_t[8]")
  local threads = {}
  for i = 1, 3 do
    local fn = thread_body(string.format([[function(shared)
      assert(T.tether_gil_held() == 1)
      shared[%d] = %d
      return T.TETHER_OK
    end]], i, i * 10))
    threads[i] = start(interp, fn, shared, "lj-" .. i)
  end
  for i, t in ipairs(threads) do
    check(T.tether_thread_join(t, DEADLINE), "join")
    assert(T.tether_thread_is_alive(t) == 0)
    local name = ffi.new("const char *[1]")
    check(T.tether_thread_name(t, name), "name")
    assert(ffi.string(name[0]) == "lj-" .. i)
    check(T.tether_thread_release(t), "release")
    assert(shared[i] == i * 10, "thread " .. i .. " did not run")
  end
end

function tests.join_with_timeout(interp)
  local shared = ffi.new("uint64_t[8]")
  shared[0] = new_event()
  local t = start(interp, thread_body [[function(shared)
    return T.tether_event_wait(shared[0], -1)
  end]], shared)
  assert(T.tether_thread_join(t, 0) == T.TETHER_ETIMEDOUT)
  assert(T.tether_thread_join(t, 1e7) == T.TETHER_ETIMEDOUT)
  check(T.tether_event_set(shared[0]), "event_set")
  check(T.tether_thread_join(t, DEADLINE), "join")
  local result = ffi.new("int[1]", -99)
  check(T.tether_thread_result(t, result), "result")
  assert(result[0] == T.TETHER_OK)
  T.tether_thread_release(t)
  T.tether_event_free(shared[0])
end

function tests.async_exception_reaches_checkpointing_thread(interp)
  local shared = ffi.new("uint64_t[8]")
  shared[0] = new_event()
  local t = start(interp, thread_body [[function(shared)
    T.tether_event_set(shared[0])
    local rc = T.TETHER_OK
    for _ = 1, 1e8 do                  -- a bound, not a timing
      rc = T.tether_checkpoint()
      if rc ~= T.TETHER_OK then break end
    end
    local code = ffi.new("int64_t[1]")
    shared[1] = rc - T.TETHER_EASYNC   -- 0 when it was EASYNC
    shared[2] = T.tether_async_fetch(code, nil, nil) - T.TETHER_OK
    shared[3] = code[0]
    return T.TETHER_OK
  end]], shared)
  check(T.tether_event_wait(shared[0], DEADLINE), "event_wait")
  check(T.tether_thread_raise(t, 4321, nil, nil), "raise")
  check(T.tether_thread_join(t, DEADLINE), "join")
  assert(shared[1] == 0, "the checkpoint did not return TETHER_EASYNC")
  assert(shared[2] == 0, "tether_async_fetch failed")
  assert(shared[3] == 4321, "wrong code: " .. tostring(shared[3]))
  T.tether_thread_release(t)
  T.tether_event_free(shared[0])
end

function tests.ensure_release_from_a_foreign_thread(interp)
  -- A pthread that tether did not create takes the GIL with ensure.
  local shared = ffi.new("uint64_t[8]")
  shared[0] = interp
  local fn = callback("void *(*)(void *)", [[function(shared)
    local tok = ffi.new("tether_gilstate[1]")
    shared[1] = T.tether_ensure(shared[0], tok) - T.TETHER_OK
    shared[2] = T.tether_gil_held()
    shared[3] = T.tether_release(tok[0]) - T.TETHER_OK
    shared[4] = T.tether_gil_held()
    return nil
  end]], "nil")
  local saved = ffi.new("tether_tstate[1]")
  check(T.tether_save_thread(saved), "save_thread")
  local tid = ffi.new("pthread_t[1]")
  assert(C.pthread_create(tid, nil, fn, shared) == 0)
  assert(C.pthread_join(tid[0], nil) == 0)
  check(T.tether_restore_thread(saved[0]), "restore_thread")
  assert(shared[1] == 0 and shared[2] == 1 and shared[3] == 0 and shared[4] == 0,
         "ensure/release on the foreign thread did not work")
end

function tests.last_error_after_misuse(interp)
  assert(T.tether_thread_join(0xDEAD0000BEEFULL, 0) == T.TETHER_EBADHANDLE)
  assert(last_error():find("tether_thread_join", 1, true), last_error())
  local tok = ffi.new("tether_gilstate[1]")
  check(T.tether_ensure(interp, tok), "ensure")
  assert(T.tether_release(tok[0] + 1) == T.TETHER_ESTATE)
  assert(last_error():find("tether_release", 1, true), last_error())
  check(T.tether_release(tok[0]), "release")
end

-- ---------------------------------------------------------------------------

local names = {}
for name in pairs(tests) do names[#names + 1] = name end
table.sort(names)
local failed = 0
for _, name in ipairs(names) do
  local rt, interp = new_runtime()
  local ok, err = pcall(tests[name], interp)
  local rc = T.tether_runtime_finalize(rt, DEADLINE)
  if ok and rc ~= T.TETHER_OK then
    ok, err = false, "finalize: " .. last_error()
  end
  close_states()
  print((ok and "ok      " or "FAILED  ") .. name .. (ok and "" or ": " .. tostring(err)))
  if not ok then failed = failed + 1 end
end
-- After finalize, the library refuses instead of hanging.
local rt, interp = new_runtime()
check(T.tether_runtime_finalize(rt, DEADLINE), "finalize")
local tok = ffi.new("tether_gilstate[1]")
local rc = T.tether_ensure(interp, tok)
assert(rc == T.TETHER_EFINALIZING or rc == T.TETHER_EBADHANDLE)
print(string.format("%d passed, %d failed", #names - failed, failed))
os.exit(failed == 0 and 0 or 1)
