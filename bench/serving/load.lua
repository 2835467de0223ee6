-- wrk script: GET BENCH_PATH with a random id in [BENCH_ID_LO, BENCH_ID_HI) per request.
-- BENCH_RATE (requests/s over all connections, optional) paces each connection with
-- delay(); without it wrk sends as fast as answers come (closed loop).
-- Prints one line "BENCH_JSON {...}" at the end: counts and latency percentiles (us).
local lo = tonumber(os.getenv("BENCH_ID_LO") or "0")
local hi = tonumber(os.getenv("BENCH_ID_HI") or "1000")
local path = os.getenv("BENCH_PATH") or "/v1/users/%d/recommendations?k=20"
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local connections = tonumber(os.getenv("BENCH_CONNECTIONS") or "1")
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(seed * 7919 + os.time())
end

function request()
  return wrk.format("GET", string.format(path, math.random(lo, hi - 1)))
end

if rate > 0 then
  -- Each connection waits its share of the interval between requests (in ms).
  function delay()
    return math.floor(1000 * connections / rate)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "p50": %d, "p90": %d, ' ..
    '"p99": %d, "p99_9": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
