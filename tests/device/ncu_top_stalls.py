"""Prints the SASS instructions where a kernel's warps stalled most, with the
stall reasons, from an Nsight Compute report's source page.

  ncu --clock-control none -k regex:flash_bwd_kernel -c 1 --launch-skip 3 \\
      --section SourceCounters --section WarpStateStats -o bwd sm90_bwd_check ncu
  ncu -i bwd.ncu-rep --page source --csv --print-source sass > bwd.csv
  python ncu_top_stalls.py bwd.csv [--top 40]

docs/hopper-notes.md (b11) has what this found.
"""

import argparse
import csv

SAMPLES = "Warp Stall Sampling (All Samples)"


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    with open(args.csv, errors="replace") as f:
        rows = list(csv.reader(f))
    header_at = next(i for i, row in enumerate(rows) if SAMPLES in row)
    header = rows[header_at]
    samples, source = header.index(SAMPLES), header.index("Source")
    reasons = [i for i, name in enumerate(header) if name.startswith("stall_") and "Not Issued" not in name]
    body = [(number(row[samples]), row) for row in rows[header_at + 1:] if len(row) > samples]
    body = [(n, row) for n, row in body if n is not None]
    total = sum(n for n, _ in body) or 1.0
    print(f"{total:.0f} samples over {len(body)} instructions")
    for n, row in sorted(body, key=lambda item: -item[0])[:args.top]:
        top = sorted(((number(row[i]) or 0, header[i][6:]) for i in reasons), reverse=True)[:3]
        why = ", ".join(f"{name} {count:.0f}" for count, name in top if count)
        print(f"{100 * n / total:5.1f}%  {row[source][:64]:64s}  {why}")


if __name__ == "__main__":
    main()
