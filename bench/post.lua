-- wrk script for POST scenarios: sends BODY (JSON), or the bytes of BODY_FILE as CONTENT_TYPE, to
-- the URL, counts answers by status and prints one JSON line with the rate of 200s, the other
-- statuses and the latency percentiles (µs).
--   BODY='{"password":"x"}' wrk -s bench/post.lua ... http://127.0.0.1:PORT/v1/password/hash
--   BODY_FILE=photo.jpg CONTENT_TYPE=image/jpeg wrk -s bench/post.lua ... '.../v1/image/thumbnail?width=400'
wrk.method = "POST"
local file = os.getenv("BODY_FILE")
if file then
  local f = assert(io.open(file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/octet-stream"
else
  wrk.body = os.getenv("BODY") or '{"password":"bench-password"}'
  wrk.headers["Content-Type"] = "application/json"
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, overloaded, late, other = 0, 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 then overloaded = overloaded + 1
  elseif status == 504 then late = late + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local n = {ok = 0, overloaded = 0, late = 0, other = 0}
  for _, t in ipairs(threads) do
    for k, _ in pairs(n) do n[k] = n[k] + t:get(k) end
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"seconds":%.3f,"rps":%.1f,"ok":%d,"status_503":%d,"status_504":%d,"other":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d,"max":%d}}\n',
    seconds, n.ok / seconds, n.ok, n.overloaded, n.late, n.other, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
