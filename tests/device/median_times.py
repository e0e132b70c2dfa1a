# median_times.py LOG [BASE]: per binary, the median time (ms) of each point over rounds of "NAME t1 t2 ..." lines,
# and the change against BASE in percent.
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) > 1:
        rows[f[0]].append([float(x) for x in f[1:]])
base = sys.argv[2] if len(sys.argv) > 2 else None
med = {b: [statistics.median(c) for c in zip(*r)] for b, r in rows.items()}
for b, m in med.items():
    rel = ""
    if base in med and b != base:
        rel = "  " + " ".join(f"{100 * (x / y - 1):+.1f}%" for x, y in zip(m, med[base]))
    print(f"{b:12s} n={len(rows[b])} " + " ".join(f"{x:.4f}" for x in m) + rel)
