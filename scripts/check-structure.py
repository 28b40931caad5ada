#!/usr/bin/env python3
"""The module structure, kept by construction (run by scripts/test.sh).

Fails when:
- a file under a component folder (receiver/, derive/, metrics/, export/,
  telemetry/) or the leaf base/ names `crate::config`, `crate::reload` or
  `crate::server` (a component is built from its own config section; the
  whole config, the reloader and the server belong to the top);
- base/ uses anything of the crate (it is the leaf every layer shares);
- the modules depend on each other in a circle.

Code only: comments, doc comments and `#[cfg(test)]` blocks are left out
(unit tests may build a whole config as the binary does). Prints the
layers, lowest first, with `--layers`.
"""
import re
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else Path(__file__).resolve().parent.parent / "src")
COMPONENTS = {"receiver", "derive", "metrics", "export", "telemetry", "base"}
TOP_ONLY = {"config", "reload", "server"}


def strip(text: str) -> str:
    """The text with comments removed and string and char literals emptied."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not text[i - 1].isalnum()):
            end = text.find('"' + m.group(1), i + m.end())
            out.append('""')
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif m := re.match(r"'(\\.|[^'\\])'", text[i:]):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def code_of(text: str) -> str:
    """The text without comments and without `#[cfg(test)]` items."""
    text = strip(text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        j = text.find("{", m.end())
        semi = text.find(";", m.end())
        if j < 0 or (0 <= semi < j):  # `#[cfg(test)] mod tests;` or a use
            i = semi + 1
            continue
        depth = 0
        for k in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                i = k + 1
                break
    out.append(text[i:])
    return "".join(out)


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def main() -> int:
    deps: dict[str, set[str]] = {}
    errors = []
    for path in sorted(SRC.rglob("*.rs")):
        mod = module_of(path)
        if mod in ("lib", "main"):
            continue
        code = code_of(path.read_text())
        used = set(re.findall(r"\bcrate::(\w+)", code))
        deps.setdefault(mod, set()).update(used - {mod})
        rel = path.relative_to(SRC.parent)
        if mod in COMPONENTS:
            for bad in sorted(used & TOP_ONLY):
                errors.append(f"{rel}: uses crate::{bad} (only main.rs, reload.rs and config/ may)")
        if mod == "base" and used - {"base"}:
            errors.append(f"{rel}: base/ must not use the crate ({', '.join(sorted(used))})")
    layers, left = [], dict(deps)
    while left:
        ready = sorted(m for m, d in left.items() if not (d & left.keys()))
        if not ready:
            errors.append("import circle among: " + ", ".join(sorted(left)))
            for m in sorted(left):
                errors.append(f"  {m} -> {', '.join(sorted(deps[m] & left.keys()))}")
            break
        layers.append(ready)
        for m in ready:
            del left[m]
    if "--layers" in sys.argv:
        for i, layer in enumerate(layers):
            print(f"layer {i}: " + ", ".join(f"{m} (-> {', '.join(sorted(deps[m])) or 'nothing'})" for m in layer))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"structure: {len(deps)} modules in {len(layers)} layers, no circle, components never name config/reload/server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
