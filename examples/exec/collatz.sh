#!/bin/sh
# collatz: a claimcheck exec job type in POSIX sh.
#
# Input {"n": N}; the result is CSV, one row per k in 1..N with the number
# of Collatz steps k takes to reach 1 and the highest value on the way.
# The exec protocol (README, "Your own job types"): input on stdin, result
# on stdout, log lines and "::progress <percent> [message]" on stderr; exit
# 65 for bad input (no retry), any other non-zero exit is retried.
set -eu

input=$(cat)
# The type's schema admits only {"n": <integer>}, so a pattern is enough.
n=$(printf '%s' "$input" | sed -n 's/.*"n"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
if [ -z "$n" ] || [ "$n" -lt 1 ]; then
	echo "bad input, want {\"n\": a positive integer}: $input" >&2
	exit 65
fi
echo "job ${CLAIMCHECK_JOB_ID:-?}: Collatz steps for 1..$n" >&2

echo "k,steps,peak"
chunks=10
step=$(( (n + chunks - 1) / chunks ))
lo=1
while [ "$lo" -le "$n" ]; do
	hi=$((lo + step - 1))
	if [ "$hi" -gt "$n" ]; then hi=$n; fi
	awk -v lo="$lo" -v hi="$hi" 'BEGIN {
		for (k = lo; k <= hi; k++) {
			x = k; s = 0; peak = k
			while (x != 1) { if (x % 2) x = 3 * x + 1; else x = x / 2; s++; if (x > peak) peak = x }
			printf "%d,%d,%.0f\n", k, s, peak
		}
	}'
	echo "::progress $((hi * 100 / n)) up to $hi" >&2
	lo=$((hi + 1))
done
echo "done: $n rows" >&2
