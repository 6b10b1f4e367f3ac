-- bench/fed_keys.lua: wrk script for bench/federation.sh. Every request reads a different KV key
-- of <count> keys named <prefix>0000, <prefix>0001, ..., cycling; wrk thread i of <threads>
-- cycles through its own slice of them, keys i * count / threads up to (i + 1) * count / threads,
-- so the requests in flight at any moment (one per connection) name distinct keys as long as
-- each slice is well above a thread's connections. (Threads that shared the whole range drifted
-- into step with each other and sent the same keys at the same time.) That keeps dcgate's
-- sharing of identical in-flight remote reads out of the throughput figure.
--
-- Usage: wrk -tT -cC -dDs -s bench/fed_keys.lua http://<addr>:8500 -- <prefix> <count> <T> [query]
--   prefix   the key's path without its number, e.g. /v1/kv/bench/fed/k
--   count    how many keys (1..10000; numbers are zero-padded to 4 digits)
--   T        wrk's -t (threads), for the offsets
--   query    appended as is, e.g. ?dc=east (default: none)

local n = 0

-- runs in wrk's main Lua state once per thread, before that thread's init()
function setup(thread)
	thread:set("thread_index", n)
	n = n + 1
end

local prefix, count, query, i, first, span

function init(args)
	prefix = args[1] or "/v1/kv/bench/fed/k"
	count = math.max(1, tonumber(args[2] or "1000") or 1000)
	local total = math.max(1, tonumber(args[3] or "1") or 1)
	query = args[4] or ""
	local t = (tonumber(thread_index) or 0) % total
	first = math.floor(t * count / total)
	span = math.max(1, math.floor((t + 1) * count / total) - first)
	i = 0
end

function request()
	local path = string.format("%s%04d%s", prefix, first + i, query)
	i = (i + 1) % span
	return wrk.format("GET", path)
end
