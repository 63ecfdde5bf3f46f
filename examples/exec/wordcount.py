#!/usr/bin/env python3
"""wordcount: a claimcheck exec job type in Python.

The exec protocol (README, "Your own job types"): the job's input JSON
arrives on stdin; what is written to stdout is the result; each stderr line
is a line of the job's log, except "::progress <percent> [message]", which
reports progress. Exit 0 succeeds; exit 65 says the input was bad (no retry);
any other exit is a failed attempt, retried.
"""

import collections
import json
import os
import re
import sys


def log(line):
    print(line, file=sys.stderr, flush=True)


def progress(percent, message=""):
    log(f"::progress {percent:.0f} {message}".rstrip())


def main():
    try:
        job = json.load(sys.stdin)
        text = job["text"]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
    except (ValueError, KeyError, TypeError) as e:
        log(f"bad input: {e}")
        return 65  # EX_DATAERR: fails the job without retry

    log(f"job {os.environ.get('CLAIMCHECK_JOB_ID')} attempt {os.environ.get('CLAIMCHECK_ATTEMPT')}: "
        f"{len(text)} characters")
    lines = text.splitlines() or [""]
    counts = collections.Counter()
    words = 0
    for i, line in enumerate(lines, 1):
        found = re.findall(r"\w+", line.lower())
        words += len(found)
        counts.update(found)
        # Report per tenth of the text, not per line: each report is a write.
        if i == len(lines) or i % max(len(lines) // 10, 1) == 0:
            progress(100 * i / len(lines), f"{i} of {len(lines)} lines")

    json.dump({
        "words": words,
        "lines": len(text.splitlines()),
        "characters": len(text),
        "top": [{"word": w, "count": n} for w, n in counts.most_common(10)],
    }, sys.stdout)
    log(f"counted {words} words, {len(counts)} distinct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
