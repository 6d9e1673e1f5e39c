-- Runs Lua 5.4.4's own test suite (the testes/ folder of lua/lua) with the
-- module loaded and another thread alive (suite_prelude.lua), each file in
-- user mode as the suite's all.lua runs it without its C testing library,
-- twice: next to a thread that takes the GIL every millisecond, and next
-- to a CPU-bound one.  Every file that passes on stock lua5.4 must pass.
--
-- Usage: lua5.4 lua_suite.lua <default suite dir>.  $TETHER_LUA_TESTSUITE,
-- when set, names the suite instead.  Without a suite the test says so and
-- exits 77, which CTest reports as skipped.
local default_dir, prelude = arg[1], arg[2]
local dir = os.getenv("TETHER_LUA_TESTSUITE") or default_dir
if not dir or not io.open(dir .. "/all.lua") then
  print("skipped: no Lua 5.4.4 test suite at " .. tostring(dir) ..
        " (set TETHER_LUA_TESTSUITE)")
  os.exit(77)
end

-- Every test file but all.lua (the whole suite in one), heavy.lua
-- (minutes and gigabytes) and the helper modules.
local files = {
  "api.lua", "attrib.lua", "big.lua", "bitwise.lua", "calls.lua",
  "closure.lua", "code.lua", "constructs.lua", "coroutine.lua",
  "cstack.lua", "db.lua", "errors.lua", "events.lua", "files.lua",
  "gc.lua", "gengc.lua", "goto.lua", "literals.lua", "locals.lua",
  "main.lua", "math.lua", "nextvar.lua", "pm.lua", "sort.lua",
  "strings.lua", "tpack.lua", "utf8.lua", "vararg.lua", "verybig.lua",
}

-- A private copy: some files write next to themselves.
local work = "lua-suite"
assert(os.execute("rm -rf " .. work .. " && cp -r '" .. dir .. "' " .. work))

local lua = os.getenv("TETHER_LUA") or "lua5.4"
local preload = os.getenv("TETHER_CHILD_PRELOAD") -- see child_env.c
local failed = {}
for _, mode in ipairs({"ticker", "spinner"}) do
  for _, file in ipairs(files) do
    local cmd = string.format(
      "cd %s && env %s TETHER_SUITE_MODE=%s LUA_PATH='./?.lua;%s' %s " ..
      "-e '_U=true;_soft=true;_port=true' -e 'dofile[[%s]]' %s > %s.%s.out 2>&1",
      work, preload and ("LD_PRELOAD=" .. preload) or "", mode,
      os.getenv("LUA_PATH") or "", lua, prelude, file, file, mode)
    io.write(mode, " ", file, " ... ")
    io.flush()
    local ok, how, status = os.execute(cmd)
    if ok then
      io.write("ok\n")
    else
      io.write("FAILED (", tostring(how), " ", tostring(status), ")\n")
      local f = io.open(work .. "/" .. file .. "." .. mode .. ".out")
      local out = f and f:read("a") or ""
      if f then f:close() end
      io.write(out:sub(-2000), "\n")
      failed[#failed + 1] = mode .. " " .. file
    end
    io.flush()
  end
end
if #failed > 0 then
  print("failed: " .. table.concat(failed, ", "))
  os.exit(1)
end
print(#files * 2 .. " runs passed")
