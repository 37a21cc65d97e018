#!/usr/bin/env python3
"""sass_loop.py NAME < cuobjdump -sass output: for each wgmma kernel, the exponentials
(MUFU.EX2) between each wait for S (WARPGROUP.DEPBAR.LE gsb0, 0x1) and the next wait for
everything (gsb0, 0x0), i.e. the softmax work that runs while P V is on the tensor cores, and
the main loop's length and instruction mix (a step's issue slots). Exits 1 when a kernel has
none beside P V. Called by bench/sass_overlap.sh."""
import collections
import re
import sys


def parse(lines):
    """{function: [(address, instruction text)]} from cuobjdump -sass lines."""
    funcs, cur = {}, None
    for line in lines:
        m = re.search(r"Function : (\S+)", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2)))
    return funcs


def beside_pv(ins):
    """Exponentials after each wait for S, before the next full wait."""
    counts, open_ = [], False
    for _, text in ins:
        if "WARPGROUP.DEPBAR.LE gsb0, 0x1" in text:
            counts.append(0)
            open_ = True
        elif "WARPGROUP.DEPBAR.LE gsb0, 0x0" in text:
            open_ = False
        elif open_ and "MUFU.EX2" in text:
            counts[-1] += 1
    return counts


def main_loop(ins):
    """The longest body that issues wgmma under a conditional backward branch (a loop's back
    edge; ptxas's out-of-line slow paths, e.g. mbarrier retries, jump back unconditionally)."""
    addrs, loop = [a for a, _ in ins], []
    for i, (a, text) in enumerate(ins):
        m = re.search(r"^@!?U?P\w+ BRA (0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in addrs:
            body = ins[addrs.index(int(m.group(1), 16)):i + 1]
            if any("HGMMA" in t for _, t in body) and len(body) > len(loop):
                loop = body
    return loop


def opcode(text):
    words = text.split()
    return (words[1] if words[0].startswith("@") else words[0]).split(".")[0]


def main():
    name, failed = sys.argv[1], False
    for fn, ins in parse(sys.stdin).items():
        counts = beside_pv(ins)
        if not counts:
            continue
        loop = main_loop(ins)
        mix = collections.Counter(opcode(t) for _, t in loop).most_common(6)
        ok = max(counts) > 0
        failed |= not ok
        print(f"{name} {fn}: exponentials beside P V after each wait for S: {counts} "
              f"{'ok' if ok else 'NONE'}; main loop {len(loop)} instructions "
              f"({', '.join(f'{k} {v}' for k, v in mix)})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
