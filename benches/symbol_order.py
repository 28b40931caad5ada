#!/usr/bin/env python3
"""The functions of one binary that ran under callgrind, hottest first, as
lld's --symbol-ordering-file wants them (benches/symbol_order.sh).

    symbol_order.py BINARY_NAME_PART CALLGRIND_OUT... > link/symbol-order.txt

Callgrind must have run with --demangle=no, so the names are the symbols
the linker sees. Several runs (of differently built binaries) are merged.
Order: exclusive instructions, descending; then the functions that ran but
cost nothing measurable, by name."""
import collections
import re
import sys

HEADER = re.compile(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$")


def executed(path, obj):
    """{symbol: exclusive instructions} of the functions of `obj` that ran."""
    names = {"ob": {}, "fn": {}}
    cost = collections.Counter()
    ob = cob = fn = None
    call_line = False
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = HEADER.match(line)
        if m:
            callee, kind, ident, name = m.groups()
            if name:
                names[kind][ident] = name
            name = names[kind].get(ident)
            if kind == "ob":
                if callee:
                    cob = name
                else:
                    ob = cob = name
            elif callee:
                if cob and obj in cob:
                    cost[name] += 0  # ran (it was called), maybe for free
                cob = ob
            else:
                fn = name if ob and obj in ob else None
                if fn:
                    cost[fn] += 0
            continue
        if line.startswith("calls="):
            call_line = True
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if call_line:  # inclusive cost of a call: not the caller's own
                call_line = False
            elif fn:
                parts = line.split()
                if len(parts) > 1:
                    cost[fn] += int(parts[1])
    return cost


def symbols(cost):
    """Merge callgrind's recursion levels (`name'2`); drop what is no symbol
    (`(below main)`, bare addresses)."""
    out = collections.Counter()
    for name, c in cost.items():
        name = re.sub(r"'\d+$", "", name)
        if name.startswith("(") or name.startswith("0x"):
            continue
        out[name] += c
    return out


def main():
    cost = collections.Counter()
    for path in sys.argv[2:]:
        cost.update(symbols(executed(path, sys.argv[1])))
    for name, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0])):
        print(name)


if __name__ == "__main__":
    main()
