-- wrk -s bench/wrk-report.lua: one machine-readable line after wrk's own report, with
-- latencies in microseconds straight from wrk's histogram (no unit parsing).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK-REPORT rps=%.1f p50=%d p90=%d p99=%d max=%d requests=%d non2xx=%d sockerr=%d duration_us=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration))
end
