-- wrk script for the overload scenario: counts answers by status and keeps the server-side
-- total time (Server-Timing) of accepted (200) answers, since wrk's own latency histogram mixes
-- them with the fast 503s. Prints one JSON line.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, rejected, other = 0, 0, 0
  accepted_ms = {}
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    local timing = headers["Server-Timing"] or headers["server-timing"] or ""
    local total = timing:match("total;dur=([%d%.]+)")
    if total and #accepted_ms < 100000 then table.insert(accepted_ms, tonumber(total)) end
  elseif status == 503 then
    rejected = rejected + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local n_ok, n_rej, n_other, all = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    n_ok = n_ok + t:get("ok")
    n_rej = n_rej + t:get("rejected")
    n_other = n_other + t:get("other")
    for _, v in ipairs(t:get("accepted_ms")) do table.insert(all, v) end
  end
  table.sort(all)
  local function pct(p)
    if #all == 0 then return 0 end
    return all[math.max(1, math.min(#all, math.ceil(p / 100 * #all)))]
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"seconds":%.3f,"accepted_rps":%.1f,"rejected_rps":%.1f,"other":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"accepted_server_ms":{"p50":%.2f,"p99":%.2f,"max":%.2f},"all_latency_us":{"p50":%d,"p99":%d}}\n',
    seconds, n_ok / seconds, n_rej / seconds, n_other, e.connect, e.read, e.write, e.timeout,
    pct(50), pct(99), pct(100), latency:percentile(50), latency:percentile(99)))
end
