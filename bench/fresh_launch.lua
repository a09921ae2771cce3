-- wrk script for the store benchmark: every request is a server-side
-- `sky launch` of a NEW cluster (so each one reserves a fresh allocation
-- against the team's quotas and budgets), from the template given after
-- `--`, whose cluster name is the placeholder WARDENCLUSTER.
--
-- Usage: wrk -t1 -c32 -d10s --latency -s bench/fresh_launch.lua \
--            http://127.0.0.1:PORT/skypilot -- TEMPLATE.json RUN_ID
-- Prints the same WRK_JSON line as post_fixture.lua.

local template
local run_id
local counter = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  template = f:read("*a")
  f:close()
  run_id = args[2] or tostring(os.time())
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = template:gsub("WARDENCLUSTER", "b" .. run_id .. "-" .. counter, 1)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"non_2xx_3xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
