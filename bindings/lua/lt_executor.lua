-- lt_executor.lua - tether.executor, tether.wait and tether.as_completed,
-- compiled into tether.so (embed.cmake) and run once by lt_open_future
-- with the module table and a private table of lt_future.c's functions:
-- new(fn, ...) a pending future, run(f [, runner]) runs one on the
-- calling thread, first_done(futures [, timeout]) (lt_select.c),
-- check_copy(v), dump(fn), remote_mt (an error from another interpreter:
-- {err, traceback}) and future_mt.
--
-- An executor is a queue of futures and its workers.  A worker of a
-- thread executor is a tether.thread that gets futures from the queue and
-- runs each with run(f).  A worker of an interp executor (interp = true)
-- is a tether.thread of this state too, which owns an isolated
-- interpreter running a loop (remote_loop) and is its proxy: it sends the
-- task's bytecode and arguments there over a channel and waits for the
-- reply, so that futures, callbacks and cancellation stay in this state.
-- Shutdown puts one STOP per worker after the tasks, so queued tasks run
-- first unless cancelled.

-- Runs in the isolated interpreter: bytecode and arguments in, one reply
-- out per task.  No upvalues but _ENV (it is copied as bytecode): it comes before every
-- local of this chunk.
local function remote_loop(req, rep)
  local tether = require "tether"
  while true do
    local job = req:recv()
    if job == nil then return end
    local tb
    local function handler(e)
      tb = debug.traceback(nil, 2)
      return e
    end
    local fn = load(job.code, "=task", "b")
    local res = table.pack(xpcall(fn, handler, table.unpack(job.args, 1, job.args.n)))
    local reply
    if res[1] then
      reply = {ok = true, n = res.n - 1, table.unpack(res, 2, res.n)}
    elseif rawequal(res[2], tether.Cancelled) then
      reply = {cancelled = true}
    else
      local err = res[2]
      if type(err) ~= "string" and type(err) ~= "number" then
        err = tostring(err)
      end
      reply = {ok = false, err = err, tb = tb or ""}
    end
    local ok, why = pcall(rep.send, rep, reply)
    if not ok then
      if rawequal(why, tether.Cancelled) then error(why, 0) end
      rep:send({ok = false, err = "results: " .. tostring(why), tb = tb or ""})
    end
  end
end

local tether, P = ...

local new_future, run, first_done = P.new, P.run, P.first_done
local future_mt, remote_mt = P.future_mt, P.remote_mt
local clock = tether.clock
local error, type, select, setmetatable, getmetatable = error, type, select, setmetatable, getmetatable
local pack, unpack = table.pack, table.unpack

local STOP = setmetatable({}, {__name = "tether.executor STOP"})

local function is_future(f)
  return getmetatable(f) == future_mt
end

-- ---------------------------------------------------------------------
-- Workers

local function thread_worker(q)
  while true do
    local f = q:get()
    if f == STOP then return end
    run(f)
  end
end

local function interp_worker(q)
  local I = tether.interp()
  local req, rep, t
  local function spawn()
    req, rep = tether.channel(), tether.channel()
    t = I:thread(remote_loop, req, rep)
  end
  spawn()
  -- runner(job): one task in the interpreter.
  local function runner(job)
    req:send(job)
    local r = rep:recv()
    if r.ok then return unpack(r, 1, r.n) end
    if r.cancelled then error(tether.Cancelled, 0) end
    error(setmetatable({r.err, r.tb}, remote_mt), 0)
  end
  -- After a cancel of the running task (run calls it with asynchronous
  -- exceptions held back): the remote thread is cancelled too and a fresh
  -- one, with fresh channels, takes its place.
  local function on_cancel()
    t:cancel()
    t:join()
    spawn()
  end
  while true do
    local f = q:get()
    if f == STOP then break end
    run(f, runner, on_cancel)
  end
  req:close()
  t:join()
  I:close()
end

-- ---------------------------------------------------------------------
-- The executor

local Executor = {}
Executor.__index = Executor
Executor.__name = "tether.executor"

local function check(ex, what)
  if getmetatable(ex) ~= Executor then
    error(what .. ": bad self (a tether.executor expected, got " .. type(ex) .. ")", 3)
  end
  return ex
end

local function option_error(msg)
  error("tether.executor: " .. msg, 3)
end

function tether.executor(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    option_error("options must be a table (workers, interp, name, queue)")
  end
  for k in pairs(opts) do
    if k ~= "workers" and k ~= "interp" and k ~= "name" and k ~= "queue" then
      option_error("unknown option '" .. tostring(k) .. "' (workers, interp, name, queue)")
    end
  end
  local n = opts.workers or 4
  if math.type(n) ~= "integer" or n < 1 or n > 1024 then
    option_error("option 'workers' must be an integer in [1, 1024]")
  end
  local cap = opts.queue or 0
  if math.type(cap) ~= "integer" or cap < 0 then
    option_error("option 'queue' must be an integer >= 0 (0: no bound)")
  end
  local name = opts.name or "executor"
  if type(name) ~= "string" then option_error("option 'name' must be a string") end
  local interp = opts.interp
  if interp ~= nil and type(interp) ~= "boolean" then
    option_error("option 'interp' must be a boolean")
  end
  local ex = setmetatable({
    name = name, workers = n, interp = interp or false,
    _q = tether.queue(cap), _threads = {}, _shut = false,
  }, Executor)
  local body = interp and interp_worker or thread_worker
  for i = 1, n do
    ex._threads[i] = tether.thread({name = name .. "-" .. i, daemon = true}, body, ex._q)
  end
  return ex
end

-- ex:submit(fn, ...) --> a future of fn(...)
function Executor:submit(fn, ...)
  check(self, "submit")
  if self._shut then error("submit: the executor is shut down", 2) end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("submit: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local f
  if self.interp then
    local ok, code = pcall(P.dump, fn)
    if not ok then error("submit: " .. tostring(code), 2) end
    local args = pack(...)
    local ok2, why = pcall(P.check_copy, args)
    if not ok2 then error("submit: " .. tostring(why), 2) end
    f = new_future({code = code, args = args})
  else
    f = new_future(fn, ...)
  end
  self._q:put(f)
  return f
end

-- ex:map(fn, list [, {timeout = s, chunks = n}]) --> the results in order
function Executor:map(fn, list, opts)
  check(self, "map")
  if type(list) ~= "table" then
    error("map: bad argument #2 (table expected, got " .. type(list) .. ")", 2)
  end
  opts = opts or {}
  local timeout = opts.timeout
  local chunks = opts.chunks or 1
  if math.type(chunks) ~= "integer" or chunks < 1 then
    error("map: option 'chunks' must be an integer >= 1", 2)
  end
  local deadline = timeout and clock() + timeout
  local futures = {}
  local n = #list
  if chunks == 1 then
    for i = 1, n do futures[i] = self:submit(fn, list[i]) end
  else
    local runner = self.interp and function(code, part)
      local f = load(code, "=task", "b")
      local out = {}
      for i = 1, #part do out[i] = f(part[i]) end
      return out
    end or function(f, part)
      local out = {}
      for i = 1, #part do out[i] = f(part[i]) end
      return out
    end
    for i = 1, n, chunks do
      local part = {}
      for j = i, math.min(n, i + chunks - 1) do part[#part + 1] = list[j] end
      if self.interp then
        futures[#futures + 1] = self:submit(runner, P.dump(fn), part)
      else
        futures[#futures + 1] = self:submit(runner, fn, part)
      end
    end
  end
  local out = {}
  for i, f in ipairs(futures) do
    local left = deadline and math.max(0, deadline - clock())
    local ok, r = pcall(f.result, f, left)
    if not ok then
      for j = i, #futures do futures[j]:cancel() end
      error(r, 0)
    end
    if chunks == 1 then
      out[i] = r
    else
      for _, v in ipairs(r) do out[#out + 1] = v end
    end
  end
  return out
end

-- ex:shutdown{wait = true, cancel = false}
function Executor:shutdown(opts)
  check(self, "shutdown")
  opts = opts or {}
  local wait = opts.wait ~= false
  if not self._shut then
    self._shut = true
    if opts.cancel then
      while true do
        local f = self._q:get(0)
        if f == nil then break end
        f:cancel()
      end
    end
    for _ = 1, self.workers do self._q:put(STOP) end
  end
  if wait then
    for _, t in ipairs(self._threads) do t:join() end
  end
end

Executor.__close = function(self) self:shutdown{wait = true} end

function Executor:__tostring()
  return string.format("tether.executor '%s' (%d %s workers%s)", self.name,
    self.workers, self.interp and "interp" or "thread", self._shut and ", shut down" or "")
end

-- ---------------------------------------------------------------------
-- wait and as_completed

local function check_futures(fs, what)
  if type(fs) ~= "table" then
    error(what .. ": bad argument #1 (an array of futures expected, got " .. type(fs) .. ")", 3)
  end
  for i = 1, #fs do
    if not is_future(fs[i]) then
      error(what .. ": element " .. i .. " is not a future", 3)
    end
  end
end

local function failed(f)
  return f:status() == "error"
end

-- tether.wait(futures, {timeout = s, return_when = "all"|"first"|"first_error"})
--   --> done, not_done (arrays, in the order of `futures`)
function tether.wait(fs, opts)
  check_futures(fs, "wait")
  opts = opts or {}
  local when = opts.return_when or "all"
  if when ~= "all" and when ~= "first" and when ~= "first_error" then
    error("wait: return_when must be \"all\", \"first\" or \"first_error\"", 2)
  end
  local deadline = opts.timeout and clock() + opts.timeout
  local function enough()
    local ndone, nerr = 0, 0
    for i = 1, #fs do
      if fs[i]:done() then
        ndone = ndone + 1
        if failed(fs[i]) then nerr = nerr + 1 end
      end
    end
    if ndone == #fs then return true end
    if when == "first" then return ndone > 0 end
    if when == "first_error" then return nerr > 0 end
    return false
  end
  while not enough() do
    local rest = {}
    for i = 1, #fs do
      if not fs[i]:done() then rest[#rest + 1] = fs[i] end
    end
    local left = deadline and math.max(0, deadline - clock())
    if first_done(rest, left) == nil then break end
  end
  local done, not_done = {}, {}
  for i = 1, #fs do
    local t = fs[i]:done() and done or not_done
    t[#t + 1] = fs[i]
  end
  return done, not_done
end

-- for f in tether.as_completed(futures [, timeout]) do ... end
function tether.as_completed(fs, timeout)
  check_futures(fs, "as_completed")
  local rest = {}
  for i = 1, #fs do rest[i] = fs[i] end
  local deadline = timeout and clock() + timeout
  return function()
    if #rest == 0 then return nil end
    local left = deadline and math.max(0, deadline - clock())
    local f = first_done(rest, left)
    if f == nil then
      error("as_completed: timeout (" .. #rest .. " of " .. #fs .. " futures not done)", 2)
    end
    for i = 1, #rest do
      if rest[i] == f then table.remove(rest, i) break end
    end
    return f
  end
end
