"""Reads one `wrk --latency` report; prints `NAME RPS P50_MS P99_MS NON2XX SOCKET_ERRORS`."""

import re
import sys


def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) / 1000 if unit == "us" else float(n) * 1000 if unit == "s" else float(n)


name, path = sys.argv[1], sys.argv[2]
out = open(path).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
errors = re.search(r"Socket errors:.*", out)
print(name, rps, p50, p99, int(bad.group(1)) if bad else 0, "yes" if errors else "no")
