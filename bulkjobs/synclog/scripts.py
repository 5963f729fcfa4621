"""The Lua scripts of the sync log: each append, the cursor read and the trim run as one
script, so a space's counter, stream, floor and marks change together (see the contract in
:mod:`bulkjobs.synclog`)."""

from __future__ import annotations

from bulkjobs.metrics import COUNT_STATE_LUA

# The server's clock in microseconds: the one clock every client shares.
_SERVER_US_LUA = """
local function server_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# A space's stream, counter, floor and marks keys.  A counter that is missing (first use, or
# Redis lost its data) or that predates the running Redis server (it restarted, maybe from an
# older snapshot) is seeded from the server's clock, never below its old value or the last
# entry still in the stream; the floor goes just above the seed.  One exception: a replica
# promoted by a failover whose previous replication id (``master_replid2``) is the one the
# space's history was written under (marks field ``repl``) goes on with that history, its
# counter and floor as they are (see "Failover" in the contract of bulkjobs.synclog).
_ENSURE_COUNTER_LUA = _SERVER_US_LUA + """
local function ensure_counter(stream, counter_key, floor_key, marks)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local counter = redis.call('GET', counter_key)
  if counter and redis.call('HGET', marks, 'run') == run then return end
  local repl = redis.call('INFO', 'replication')
  local replid = string.match(repl, 'master_replid:(%x+)')
  local replid2 = string.match(repl, 'master_replid2:(%x+)')
  if counter and replid2 and replid2 ~= string.rep('0', 40)
      and redis.call('HGET', marks, 'repl') == replid2 then
    redis.call('HSET', marks, 'run', run, 'repl', replid)
    return
  end
  local seed = server_us()
  if counter and tonumber(counter) > seed then seed = tonumber(counter) end
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last > 0 then
    local lid = tonumber(string.match(last[1][1], '^(%d+)'))
    if lid > seed then seed = lid end
  end
  redis.call('SET', counter_key, string.format('%.0f', seed))
  redis.call('SET', floor_key, string.format('%.0f', seed + 1))
  redis.call('HSET', marks, 'run', run, 'repl', replid)
end
"""

# The hard bound: after an append, the entries whose (last) cursor is below
# ``counter - max_events + 1`` go and the floor rises to it, as a trim by count does
# (``TRIM_LUA``).  ``__MAX_EVENTS__`` is the log's bound (:func:`bounded`).
_BOUND_LUA = """
local function bound(stream, counter, floor_key)
  local cutoff = tonumber(redis.call('GET', counter)) - __MAX_EVENTS__ + 1
  local floor = tonumber(redis.call('GET', floor_key) or '0')
  if cutoff > floor then
    redis.call('XTRIM', stream, 'MINID', string.format('%.0f', cutoff) .. '-0')
    redis.call('SET', floor_key, string.format('%.0f', cutoff))
  end
end
"""

# The two appends as functions over one space ``K`` = {stream, counter, floor, marks, spaces,
# metrics}: ``A`` holds the arguments from index ``i`` on, ``once`` is the once-key (nil:
# none) kept ``ttl`` seconds.  A once-key set already appends nothing (a write all the same:
# a WAIT after it covers the first append).  Cursors are formatted explicitly: Lua would
# print a 16-digit number in exponent notation.
_APPENDS_LUA = _ENSURE_COUNTER_LUA + _BOUND_LUA + """
local function once_only(K, once, ttl)
  if once and not redis.call('SET', once, '1', 'NX', 'EX', ttl) then
    redis.call('HINCRBY', K[4], 'again', 1)
    return false
  end
  return true
end

local function appended(K, space, minute, first, n)
  redis.call('HSETNX', K[4], minute, string.format('%.0f', first))
  redis.call('SADD', K[5], space)
  -- the events-appended counter of bulkjobs.metrics, counted here to cost no round trip
  redis.call('HINCRBY', K[6], space == 'cc' and 'events:cc' or 'events:project', n)
  bound(K[1], K[2], K[3])
end

-- n single events, each (p, k, s, d) -> their cursors ({} when the once-key was set already)
local function append_events(K, space, now, minute, once, ttl, A, i, n)
  ensure_counter(K[1], K[2], K[3], K[4])
  if not once_only(K, once, ttl) then return {} end
  local out = {}
  for j = 0, n - 1 do
    local base = i + j * 4
    local c = redis.call('INCR', K[2])
    redis.call('XADD', K[1], string.format('%.0f', c) .. '-0',
      'p', A[base], 'k', A[base + 1], 's', A[base + 2], 'd', A[base + 3], 't', now)
    out[#out + 1] = c
  end
  if n > 0 then appended(K, space, minute, out[1], n) end
  return out
end

-- m packs, each (n, p, a, y, g), one entry each, its id the pack's last cursor (see the
-- contract in bulkjobs.synclog) -> {first cursor, last cursor}, {0, 0} when the once-key was
-- set already
local function append_packs(K, space, now, minute, once, ttl, A, i, m)
  ensure_counter(K[1], K[2], K[3], K[4])
  if not once_only(K, once, ttl) then return {0, 0} end
  local first, last, total = 0, 0, 0
  for j = 0, m - 1 do
    local base = i + j * 5
    local n = tonumber(A[base])
    local c = redis.call('INCRBY', K[2], n)
    redis.call('XADD', K[1], string.format('%.0f', c) .. '-0', 'n', A[base],
      'p', A[base + 1], 'a', A[base + 2], 'y', A[base + 3], 'g', A[base + 4], 't', now)
    if j == 0 then first = c - n + 1 end
    last = c
    total = total + n
  end
  if total > 0 then appended(K, space, minute, first, total) end
  return {first, last}
end
"""

# KEYS: stream, counter, floor, marks, spaces, metrics [, once]
# ARGV: space, now_us, minute, once_ttl, n, then n * (p, k, s, d)
APPEND_LUA = _APPENDS_LUA + """
return append_events({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, ARGV[1], ARGV[2],
  ARGV[3], KEYS[7], tonumber(ARGV[4]), ARGV, 6, tonumber(ARGV[5]))
"""

# KEYS: stream, counter, floor, marks, spaces, metrics [, once]
# ARGV: space, now_us, minute, m, then m * (n, p, a, y, g), then once_ttl
APPEND_PACKED_LUA = _APPENDS_LUA + """
local m = tonumber(ARGV[4])
return append_packs({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, ARGV[1], ARGV[2],
  ARGV[3], KEYS[7], tonumber(ARGV[5 + m * 5]), ARGV, 5, m)
"""

# A job's end in one call (:meth:`bulkjobs.synclog.SyncLog.append_end`): the job events held
# back for it, the record events it owes (each part at most once), then its terminal event
# (at most once), counted in the metrics when appended now — in this order, atomically.
# KEYS: stream, counter, floor, marks, spaces, metrics (the job events' space), metrics
#       progress, terminal once-key [, project stream, counter, floor, marks, then r once-keys]
# ARGV: space, now_us, minute, once_ttl, h, h * (p, k, s, d), the terminal's (p, k, s, d),
#       the count's 7 arguments (bulkjobs.metrics.job_state_args), project, r, then r times
#       m, m * (n, p, a, y, g)
# -> the terminal event's cursor, {} when it had been appended already.
APPEND_END_LUA = _APPENDS_LUA + COUNT_STATE_LUA + """
local K = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
local space, now, minute, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local h = tonumber(ARGV[5])
append_events(K, space, now, minute, nil, ttl, ARGV, 6, h)
local terminal = 6 + h * 4
local count = terminal + 4
local project, r = ARGV[count + 7], tonumber(ARGV[count + 8])
local P = {KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[5], KEYS[6]}
local i = count + 9
for j = 1, r do
  local m = tonumber(ARGV[i])
  append_packs(P, project, now, minute, KEYS[12 + j], ttl, ARGV, i + 1, m)
  i = i + 1 + m * 5
end
local out = append_events(K, space, now, minute, KEYS[8], ttl, ARGV, terminal, 1)
if #out > 0 then count_state(KEYS[6], KEYS[7], ARGV, count) end
return out
"""

# KEYS: stream, counter, floor, marks ; ARGV: now_us (unused: the seed is the server's clock)
# -> {counter, floor}
CURSORS_LUA = _ENSURE_COUNTER_LUA + """
ensure_counter(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
"""

# KEYS: stream, floor, marks ; ARGV: cutoff -> new floor.  MINID removes the entries whose id
# (last cursor) is below the cutoff and keeps a pack straddling it whole: every event at or
# above the cutoff stays, so the cutoff is a correct floor.
TRIM_LUA = """
local cutoff = tonumber(ARGV[1])
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
if cutoff <= floor then return string.format('%.0f', floor) end
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', cutoff) .. '-0')
redis.call('SET', KEYS[2], string.format('%.0f', cutoff))
return string.format('%.0f', cutoff)
"""


def bounded(script: str, max_events: int) -> str:
    """An append script with the log's hard bound written in (it is part of the script's
    text, so that every append through the log keeps it, whichever call builds the
    arguments)."""
    if max_events < 1:
        raise ValueError("max_events must be at least 1")
    return script.replace("__MAX_EVENTS__", str(int(max_events)))
