-- token.lua - wrk script of bench/registry.sh: GET the URL given to wrk (the broker's
-- /registry/token?service=…&scope=…) with `Authorization: Basic $WRK_AUTH` (base64 of
-- robot:secret), as a registry client does; count 2xx and other answers; print one line
--   BENCH ok=… non2xx=… rps=… p50_us=… p99_us=… max_us=… sockerr=… timeouts=…
wrk.method = "GET"
wrk.headers["Authorization"] = "Basic " .. os.getenv("WRK_AUTH")

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0 end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    "BENCH ok=%d non2xx=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d sockerr=%d timeouts=%d\n",
    o, b, summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), latency.max, e.connect + e.read + e.write, e.timeout))
end
