#!/usr/bin/env python3
"""Lists the Lynis tests that did not get all their hardening points, from
a Lynis log (`lynis.log`), largest loss first: where the index is lost."""
import collections
import re
import sys

test, lost, total = None, collections.Counter(), [0, 0]
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Performing test ID (\S+)", line)
    if m:
        test = m.group(1)
    m = re.search(r"assigned partial number of hardening points \((\d+) of (\d+)\)", line)
    if m:
        lost[test] += int(m.group(2)) - int(m.group(1))
for t, n in lost.most_common():
    print(f"{t}\t-{n}")
