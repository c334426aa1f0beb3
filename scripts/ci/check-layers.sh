#!/usr/bin/env bash
# Checks that kiln's modules only point down: every `crate::X` path (in a
# `use`, a `use crate::{X, …}` group, or inline) and every `super::` chain
# that climbs out of a top-level module must name a module *below* the
# importing one in the layer order declared in docs/ARCHITECTURE.md (the
# fenced ```layers block, top to bottom). A module of src/ that the list
# does not name fails too, so the document cannot drift from the code.
#
# Usage: scripts/ci/check-layers.sh [REPO_ROOT]   (default: this checkout)
# Exit: 0 when the order holds, 1 with one line per upward import, 2 on a
# broken setup (no list in the document).
set -euo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
exec python3 - "$root" <<'PY'
import os
import re
import sys

root = sys.argv[1]
doc_path = os.path.join(root, "docs", "ARCHITECTURE.md")
src = os.path.join(root, "src")

try:
    doc = open(doc_path, encoding="utf-8").read()
except OSError as e:
    print(f"check-layers: cannot read {doc_path}: {e}", file=sys.stderr)
    sys.exit(2)
m = re.search(r"^```layers[ \t]*\n(.*?)^```", doc, re.S | re.M)
if not m:
    print(f"check-layers: {doc_path} has no ```layers block", file=sys.stderr)
    sys.exit(2)
order = []
for line in m.group(1).splitlines():
    words = line.split()
    if words:
        order.append(words[0])
rank = {name: i for i, name in enumerate(order)}  # 0 is the top


def strip(text):
    """The code with comments, strings and char literals blanked (newlines
    kept, so line numbers stay true)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif re.match(r'(?:b|c)?r#*"', text[i:i + 260]) and not re.match(r"\w", text[i - 1:i] or " "):
            q = re.match(r'(?:b|c)?r(#*)"', text[i:])
            end = '"' + q.group(1)
            j = text.find(end, i + q.end())
            j = n if j < 0 else j + len(end)
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j + 1))
            i = j + 1
        elif c == "'" and re.match(r"'(?:\\.[^']*|[^\\'])'", text[i:i + 12]):
            i += re.match(r"'(?:\\.[^']*|[^\\'])'", text[i:]).end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_path(rel):
    """`builder/oci/build.rs` -> [builder, oci, build]; `x/mod.rs` -> [x]."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts.pop()
    return parts


problems = []
seen_tops = set()
for dirpath, dirnames, filenames in os.walk(src):
    dirnames.sort()
    for f in sorted(filenames):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, src)
        if rel in ("lib.rs", "main.rs"):
            continue
        mod = module_path(rel)
        top = mod[0]
        seen_tops.add(top)
        if top not in rank:
            continue
        code = strip(open(path, encoding="utf-8").read())
        refs = []  # (offset, module)
        for g in re.finditer(r"\bcrate::\{", code):
            # The first name of each item of the group, at its top level.
            j, depth, expect = g.end(), 1, True
            while j < len(code) and depth:
                ch = code[j]
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                elif ch == "," and depth == 1:
                    expect = True
                elif expect and depth == 1 and (ch.isalnum() or ch == "_"):
                    name = re.match(r"\w+", code[j:]).group(0)
                    refs.append((j, name))
                    expect = False
                    j += len(name)
                    continue
                j += 1
        for r in re.finditer(r"\bcrate::(\w+)", code):
            refs.append((r.start(), r.group(1)))
        for r in re.finditer(r"(?<![\w:])((?:super::)+)(\w+)", code):
            ups = r.group(1).count("super::")
            if ups >= len(mod):
                name = r.group(2)
                if name == "super":
                    continue
                refs.append((r.start(), name))
        for at, name in refs:
            if name == top or name not in rank:
                continue
            if rank[name] < rank[top]:
                line = code.count("\n", 0, at) + 1
                problems.append(
                    f"src/{rel}:{line}: `{top}` uses `{name}`, which is above it in the layer order"
                )

missing = sorted(seen_tops - set(rank))
for name in missing:
    problems.append(
        f"src/{name}: module `{name}` is not in the ```layers list of docs/ARCHITECTURE.md"
    )
if problems:
    for p in sorted(set(problems)):
        print(p)
    print(
        f"check-layers: {len(set(problems))} problem(s); order, top to bottom: {' > '.join(order)}",
        file=sys.stderr,
    )
    sys.exit(1)
print(f"check-layers: ok ({len(seen_tops)} modules; {' > '.join(order)})")
PY
