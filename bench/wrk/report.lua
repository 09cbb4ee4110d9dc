-- Appended by bench/run.py to each scenario's script (or used alone): prints one
-- machine-readable line after wrk's own report. Latencies are in microseconds.
done = function(summary, latency, requests)
   io.write(string.format(
      "BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
      "\"errors\": {\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d}, " ..
      "\"latency_us\": {\"min\": %d, \"mean\": %.1f, \"stdev\": %.1f, \"max\": %d, " ..
      "\"p50\": %d, \"p75\": %d, \"p90\": %d, \"p99\": %d, \"p999\": %d}}\n",
      summary.requests, summary.duration, summary.bytes,
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
