"""The Lua scripts of the sync log: each append, the cursor read and the trim run as one
script, so a space's counter, stream, floor and marks change together (see the contract in
:mod:`bulkjobs.synclog`)."""

from __future__ import annotations

# The server's clock in microseconds: the one clock every client shares.
_SERVER_US_LUA = """
local function server_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# KEYS[1] stream, KEYS[2] counter, KEYS[3] floor, KEYS[4] marks.  A counter that is missing
# (first use, or Redis lost its data) or that predates the running Redis server (it restarted,
# maybe from an older snapshot) is seeded from the server's clock, never below its old value
# or the last entry still in the stream; the floor goes just above the seed.  One exception: a
# replica promoted by a failover whose previous replication id (``master_replid2``) is the one
# the space's history was written under (marks field ``repl``) goes on with that history, its
# counter and floor as they are (see "Failover" in the contract of bulkjobs.synclog).
_ENSURE_COUNTER_LUA = _SERVER_US_LUA + """
local function ensure_counter()
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local counter = redis.call('GET', KEYS[2])
  if counter and redis.call('HGET', KEYS[4], 'run') == run then return end
  local repl = redis.call('INFO', 'replication')
  local replid = string.match(repl, 'master_replid:(%x+)')
  local replid2 = string.match(repl, 'master_replid2:(%x+)')
  if counter and replid2 and replid2 ~= string.rep('0', 40)
      and redis.call('HGET', KEYS[4], 'repl') == replid2 then
    redis.call('HSET', KEYS[4], 'run', run, 'repl', replid)
    return
  end
  local seed = server_us()
  if counter and tonumber(counter) > seed then seed = tonumber(counter) end
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local lid = tonumber(string.match(last[1][1], '^(%d+)'))
    if lid > seed then seed = lid end
  end
  redis.call('SET', KEYS[2], string.format('%.0f', seed))
  redis.call('SET', KEYS[3], string.format('%.0f', seed + 1))
  redis.call('HSET', KEYS[4], 'run', run, 'repl', replid)
end
"""

# KEYS[1] stream, KEYS[2] counter, KEYS[3] floor.  The hard bound: after an append, the
# entries whose (last) cursor is below ``counter - max_events + 1`` go and the floor rises to
# it, as a trim by count does (``TRIM_LUA``).  ``__MAX_EVENTS__`` is the log's bound
# (:func:`bounded`).
_BOUND_LUA = """
local function bound()
  local cutoff = tonumber(redis.call('GET', KEYS[2])) - __MAX_EVENTS__ + 1
  local floor = tonumber(redis.call('GET', KEYS[3]) or '0')
  if cutoff > floor then
    redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', cutoff) .. '-0')
    redis.call('SET', KEYS[3], string.format('%.0f', cutoff))
  end
end
"""

# KEYS: stream, counter, floor, marks, spaces, metrics [, dedupe]
# ARGV: space, now_us, minute, dedupe_ttl, n, then n * (p, k, s, d)
APPEND_LUA = _ENSURE_COUNTER_LUA + _BOUND_LUA + """
ensure_counter()
if KEYS[7] then
  if not redis.call('SET', KEYS[7], '1', 'NX', 'EX', tonumber(ARGV[4])) then
    redis.call('HINCRBY', KEYS[4], 'again', 1)  -- a write: a WAIT after it covers the first
    return {}
  end
end
local n = tonumber(ARGV[5])
local out = {}
local now = ARGV[2]
for i = 0, n - 1 do
  local base = 6 + i * 4
  local c = redis.call('INCR', KEYS[2])
  -- format explicitly: Lua would print a 16-digit number in exponent notation
  redis.call('XADD', KEYS[1], string.format('%.0f', c) .. '-0',
    'p', ARGV[base], 'k', ARGV[base + 1], 's', ARGV[base + 2], 'd', ARGV[base + 3], 't', now)
  out[#out + 1] = c
end
if n > 0 then
  redis.call('HSETNX', KEYS[4], ARGV[3], string.format('%.0f', out[1]))
  redis.call('SADD', KEYS[5], ARGV[1])
  -- the events-appended counter of bulkjobs.metrics, counted here to cost no round trip
  redis.call('HINCRBY', KEYS[6], ARGV[1] == 'cc' and 'events:cc' or 'events:project', n)
  bound()
end
return out
"""

# KEYS: stream, counter, floor, marks, spaces, metrics [, once]
# ARGV: space, now_us, minute, m, then m * (n, p, a, y, g), then once_ttl
# -> {first cursor, last cursor}, {0, 0} when the once key was set already.
# One entry per pack, its id the pack's last cursor (see the contract in bulkjobs.synclog).
APPEND_PACKED_LUA = _ENSURE_COUNTER_LUA + _BOUND_LUA + """
ensure_counter()
local m = tonumber(ARGV[4])
if KEYS[7] then
  if not redis.call('SET', KEYS[7], '1', 'NX', 'EX', tonumber(ARGV[5 + m * 5])) then
    redis.call('HINCRBY', KEYS[4], 'again', 1)  -- a write: a WAIT after it covers the first
    return {0, 0}
  end
end
local now = ARGV[2]
local first, last, total = 0, 0, 0
for i = 0, m - 1 do
  local base = 5 + i * 5
  local n = tonumber(ARGV[base])
  local c = redis.call('INCRBY', KEYS[2], n)
  redis.call('XADD', KEYS[1], string.format('%.0f', c) .. '-0', 'n', ARGV[base],
    'p', ARGV[base + 1], 'a', ARGV[base + 2], 'y', ARGV[base + 3], 'g', ARGV[base + 4], 't', now)
  if i == 0 then first = c - n + 1 end
  last = c
  total = total + n
end
if total > 0 then
  redis.call('HSETNX', KEYS[4], ARGV[3], string.format('%.0f', first))
  redis.call('SADD', KEYS[5], ARGV[1])
  redis.call('HINCRBY', KEYS[6], ARGV[1] == 'cc' and 'events:cc' or 'events:project', total)
  bound()
end
return {first, last}
"""

# KEYS: stream, counter, floor, marks ; ARGV: now_us (unused: the seed is the server's clock)
# -> {counter, floor}
CURSORS_LUA = _ENSURE_COUNTER_LUA + """
ensure_counter()
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
