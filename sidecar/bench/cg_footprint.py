#!/usr/bin/env python3
"""How much code one statement (or request) runs through: the hot code
footprint of a callgrind profile taken with `--dump-instr=yes`.

Why: on the bench's 2 cores the client, the server and the proxy take turns,
so each statement finds the proxy's code and data mostly evicted from the
first-level caches. Its CPU time then follows the number of distinct cache
lines it touches more than its instruction count: two builds can run the same
instructions per statement (pg_cost.sh `cg`) and still differ by a third in
user time. This counts the 64-byte code lines whose instructions ran at least
MIN_EXEC times (give the number of statements of the profile, or a little
less: the lines every statement runs), in all and per function.

No crate reads callgrind's format (its compressed names and relative
instruction addresses), hence this short reader.

Usage:
  OUT=dir CALLGRIND_ARGS=--dump-instr=yes sidecar/bench/pg_cost.sh BIN cg simple 200
  sidecar/bench/cg_footprint.py dir/BIN-simple-c1-2.cg 380 [TOP]
(the `-2` profile counts 2 x 200 statements: lines run by every one of them
ran at least 400 times).
"""
import collections
import re
import sys

NAME = re.compile(r"(c?fn)=\((\d+)\)(?: (.*))?")


def hot_lines(path, min_exec):
    """Hot 64-byte code lines per function: {function: count}."""
    names = {}
    function = None
    address = 0
    after_call = False
    runs = collections.defaultdict(int)
    with open(path, errors="replace") as profile:
        for line in profile:
            line = line.rstrip("\n")
            named = NAME.match(line)
            if named:
                kind, ident, name = named.groups()
                if name:
                    names[ident] = name
                if kind == "fn":
                    function = names.get(ident, ident)
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            if not line or line[0] not in "0123456789+-*":
                continue
            fields = line.split()
            position = fields[0]
            if position.startswith("0x"):
                address = int(position, 16)
            elif position[0] in "+-":
                step = position[1:]
                step = int(step, 16) if step.startswith("0x") else int(step)
                address += step if position[0] == "+" else -step
            elif position != "*":
                continue
            if after_call:
                # The cost line of a call is the callee's, not this
                # instruction's count.
                after_call = False
                continue
            count = int(fields[-1]) if len(fields) >= 3 else 0
            key = (function, address >> 6)
            runs[key] = max(runs[key], count)
    hot = collections.defaultdict(int)
    for (function, _), count in runs.items():
        if count >= min_exec:
            hot[function] += 1
    return hot


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, min_exec = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    hot = hot_lines(path, min_exec)
    total = sum(hot.values())
    print(f"{path}: {total} hot code lines ({total * 64 // 1024} KiB) ran >= {min_exec} times")
    for function, lines in sorted(hot.items(), key=lambda kv: -kv[1])[:top]:
        name = re.sub(r" \[.*", "", str(function))[:140]
        print(f"{lines:6d}  {name}")


if __name__ == "__main__":
    main()
