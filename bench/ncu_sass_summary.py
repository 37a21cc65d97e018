#!/usr/bin/env python3
"""ncu_sass_summary.py: summarises an ncu SASS source page (CSV) by opcode and stall reason.

Usage: bench/ncu_sass_summary.py FILE.csv
where FILE.csv is `ncu --section SourceCounters --page source --print-source sass --csv ...`.
Prints the stall reasons, where the stall samples fall by opcode, the executed instructions
by opcode, and the 25 instructions with the most samples.
"""
import csv, sys, collections
f = sys.argv[1]
lines = open(f).read().splitlines()
start = [i for i,l in enumerate(lines) if l.startswith('"Address"')][0]
rows = list(csv.reader(lines[start:]))
hdr = rows[0]; rows = rows[1:]
ix = {h:i for i,h in enumerate(hdr)}
def num(x):
    try: return float(x.replace(',',''))
    except: return 0.0
stalls = [h for h in hdr if h.startswith('stall_') and 'Not Issued' not in h]
tot = collections.Counter(); n_samp = 0; inst = 0
byop = collections.Counter(); execs = collections.Counter()
for r in rows:
    if len(r) < len(hdr): continue
    s = num(r[ix["Warp Stall Sampling (All Samples)"]]); n_samp += s
    op = r[ix["Source"]].strip().split()[0] if r[ix["Source"]].strip() else '?'
    if op.startswith('@'): op = r[ix["Source"]].strip().split()[1]
    op = op.split('.')[0]
    byop[op] += s
    execs[op] += num(r[ix["Instructions Executed"]])
    for h in stalls: tot[h] += num(r[ix[h]])
print("samples", n_samp, "instructions executed", sum(execs.values()))
print("stalls:", ", ".join(f"{k[6:]} {v/n_samp*100:.0f}%" for k,v in tot.most_common(8)))
print("samples by opcode:", ", ".join(f"{k} {v/n_samp*100:.0f}%" for k,v in byop.most_common(14)))
print("executed by opcode:", ", ".join(f"{k} {v:.0f}" for k,v in execs.most_common(16)))
# top instructions
top = sorted(rows, key=lambda r: -num(r[ix["Warp Stall Sampling (All Samples)"]]) if len(r)>=len(hdr) else 0)[:25]
for r in top:
    s = num(r[ix["Warp Stall Sampling (All Samples)"]])
    st = sorted(((num(r[ix[h]]),h[6:]) for h in stalls), reverse=True)[:2]
    print(f"{r[0]:>6} {s/n_samp*100:5.1f}% {r[1][:60]:60s} {st}")
