-- wrk script of the saturation bench (loadtest/saturation/wrk.py).
-- Environment: PULSE_WRK_PORTS="8081,8082" gives thread k the k-th port (round robin), so one
-- wrk run loads several instances and merges their latencies; PULSE_WRK_METHOD and
-- PULSE_WRK_BODY (JSON) make it a write. done() prints one line "WRKJSON {...}" with the
-- totals, error counts and latency percentiles in microseconds.
local ports = {}
for port in string.gmatch(os.getenv("PULSE_WRK_PORTS") or "", "%d+") do
  ports[#ports + 1] = port
end
local next_thread = 0

wrk.method = os.getenv("PULSE_WRK_METHOD") or "GET"
local body = os.getenv("PULSE_WRK_BODY") or ""
if #body > 0 then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function setup(thread)
  if #ports > 0 then
    thread.addr = wrk.lookup("127.0.0.1", ports[(next_thread % #ports) + 1])[1]
    next_thread = next_thread + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p99.9": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
