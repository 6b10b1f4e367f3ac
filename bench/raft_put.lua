-- bench/raft_put.lua: wrk script for bench/raft.sh. Every request writes a key no other request
-- of the run writes (<prefix>/t<thread>/<n>), with the same value of <size> bytes, and every
-- answer is checked: a status outside 2xx, or a body that is not the server's success answer,
-- counts as bad. done() prints the figures and the counts on stdout, one "raft_put <name> <value>"
-- a line, for the script to read (bench/raft.sh refuses a run with any bad answer or socket error).
--
-- Usage: wrk -tT -cC -dDs -s bench/raft_put.lua http://<addr>:<port> -- <kind> <prefix> <size>
--   kind     consul: PUT /v1/kv/<prefix>/t<i>/<n> with the value as the body; success is 200
--            with the body "true".
--            etcd: POST /v3/kv/put (etcd's gRPC JSON gateway) with {"key": b64, "value": b64};
--            success is 200 with a JSON body carrying the write's "revision" in its header.
--   prefix   key prefix without a leading slash, e.g. bench/raft/r3-c16 (one per run)
--   size     value size in bytes (1..65536)

local threads = {}
local n_threads = 0

-- runs in wrk's main Lua state once per thread, before that thread's init()
function setup(thread)
	thread:set("thread_index", n_threads)
	n_threads = n_threads + 1
	table.insert(threads, thread)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- standard base64 with padding, arithmetic only (no bit library needed)
local function b64(s)
	local out, len = {}, #s
	for i = 1, len, 3 do
		local a, b, c = s:byte(i, i + 2)
		local n = a * 65536 + (b or 0) * 256 + (c or 0)
		local c1 = math.floor(n / 262144) % 64
		local c2 = math.floor(n / 4096) % 64
		local c3 = math.floor(n / 64) % 64
		local c4 = n % 64
		out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1) ..
			(b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
	end
	return table.concat(out)
end

local kind, prefix, value, value_b64, seq
-- per-thread counts, read by done() through thread:get()
bad = 0
good = 0
first_bad = ""

function init(args)
	kind = args[1] or "consul"
	prefix = (args[2] or "bench/raft"):gsub("^/+", "") .. "/t" .. tostring(thread_index or 0) .. "/"
	local size = math.max(1, math.min(65536, tonumber(args[3] or "128") or 128))
	-- printable, not one repeated byte, the same in every thread and run
	local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	local v = {}
	for i = 1, size do
		local k = (i * 7) % #alphabet + 1
		v[i] = alphabet:sub(k, k)
	end
	value = table.concat(v)
	value_b64 = b64(value)
	seq = 0
	if kind ~= "consul" and kind ~= "etcd" then
		error("raft_put.lua: kind must be consul or etcd, got " .. tostring(kind))
	end
end

function request()
	local key = prefix .. string.format("%08d", seq)
	seq = seq + 1
	if kind == "consul" then
		return wrk.format("PUT", "/v1/kv/" .. key, nil, value)
	end
	local body = '{"key":"' .. b64(key) .. '","value":"' .. value_b64 .. '"}'
	return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"}, body)
end

local function ok(status, body)
	if status < 200 or status > 299 or body == nil then
		return false
	end
	if kind == "consul" then
		return body:match("^%s*true%s*$") ~= nil
	end
	-- a put's answer: {"header":{"cluster_id":..,"member_id":..,"revision":"N","raft_term":..}}
	return body:find('"revision"', 1, true) ~= nil and body:find('"error"', 1, true) == nil
end

function response(status, headers, body)
	if ok(status, body) then
		good = good + 1
	else
		if bad == 0 then
			first_bad = tostring(status) .. " " .. tostring(body):sub(1, 200):gsub("%s+", " ")
		end
		bad = bad + 1
	end
end

function done(summary, latency, requests)
	local n_bad, n_good, sample = 0, 0, ""
	for _, t in ipairs(threads) do
		n_bad = n_bad + (tonumber(t:get("bad")) or 0)
		n_good = n_good + (tonumber(t:get("good")) or 0)
		local s = t:get("first_bad")
		if sample == "" and s and s ~= "" then
			sample = s
		end
	end
	local e = summary.errors
	local secs = summary.duration / 1e6
	io.write(string.format("raft_put requests %d\n", summary.requests))
	io.write(string.format("raft_put seconds %.3f\n", secs))
	io.write(string.format("raft_put puts_per_s %.1f\n", secs > 0 and summary.requests / secs or 0))
	io.write(string.format("raft_put p50_ms %.3f\n", latency:percentile(50.0) / 1000))
	io.write(string.format("raft_put p99_ms %.3f\n", latency:percentile(99.0) / 1000))
	-- the slowest single answer; the percentiles above include wrk's correction for coordinated
	-- omission (docs/bench.md), the maximum does not
	io.write(string.format("raft_put max_ms %.3f\n", latency.max / 1000))
	io.write(string.format("raft_put good %d\n", n_good))
	io.write(string.format("raft_put bad %d\n", n_bad))
	io.write(string.format("raft_put socket_errors %d\n", e.connect + e.read + e.write + e.timeout))
	io.write(string.format("raft_put socket_errors_detail connect=%d,read=%d,write=%d,timeout=%d\n",
		e.connect, e.read, e.write, e.timeout))
	io.write(string.format("raft_put status_errors %d\n", e.status))
	if sample ~= "" then
		io.write("raft_put first_bad " .. sample .. "\n")
	end
end
