#!/usr/bin/env bash
# The size rules of the code (issue #20's done-means): no product .rs file
# over 800 lines and no function over 120 lines, not counting unit tests
# (`#[cfg(test)]` modules, inline or in their own file) nor the crates'
# tests/ folders. Functions that are one long match table may be allowed by
# name below, each with its reason.
#
# Usage: scripts/renovation-check.sh [ROOT]   (ROOT: the repository, default
#        the folder above this script)
# Prints every file and function over its limit, one a line:
#   file  PATH  LINES
#   fn    PATH:LINE  NAME  LINES
#   path  README:LINE  CITED   (a cited .rs file that does not exist)
# Exit codes: 0 nothing over, 1 something over, 2 python3 missing.
# Knobs: MAX_FILE_LINES (800), MAX_FN_LINES (120).
set -uo pipefail
root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
command -v python3 >/dev/null || {
    echo "renovation-check: python3 is needed (apt-get install python3)" >&2
    exit 2
}
exec python3 - "$root" "${MAX_FILE_LINES:-800}" "${MAX_FN_LINES:-120}" <<'PY'
import os, re, sys

root, max_file, max_fn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

# Functions that are one match table over the kinds of a foreign AST or
# protocol: splitting them would scatter one table. PATH:NAME -> reason.
ALLOWED = {
    "policy/src/sql/kind.rs:statement_kind":
        "one arm per sqlparser Statement variant (the table of statement kinds)",
    "policy/src/mask_plan/analyzer/from.rs:table_factor":
        "one arm per sqlparser TableFactor variant",
    "policy/src/sql/collect.rs:note_statement":
        "one arm per sqlparser Statement variant (what each one reads and writes)",
    "e2e/src/apiserver/cel_cost.rs:cost":
        "one arm per CEL expression kind (cel-go's cost estimator, mirrored)",
    "e2e/src/apiserver/cel_cost.rs:cost_call":
        "one arm per CEL function (cel-go's functionCost table)",
    "e2e/src/apiserver/registry.rs:builtins":
        "the table of built-in resource types the test API server serves",
}

CRATES = ["crds", "policy", "sidecar", "operator", "cli", "e2e"]
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")
TEST_MOD = re.compile(r"^\s*#\[cfg\(test\)\]\s*$")
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])")


def blank_code(text):
    """The text with comments, strings and char literals blanked (newlines
    kept), so that braces can be counted."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j): depth += 1; j += 2
                elif text.startswith("*/", j): depth -= 1; j += 2
                else: j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = len(re.match(r"r(#*)", text[i:]).group(1))
            end = text.find('"' + "#" * hashes, i + 2 + hashes)
            j = n if end < 0 else end + 1 + hashes
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == "'":
            m = re.match(r"'(\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", text[i:i + 12])
            if m:
                out.append(" " * len(m.group(0))); i += len(m.group(0))
            else:  # a lifetime or label
                out.append(c); i += 1
        else:
            out.append(c); i += 1
    return "".join(out)


def block_end(lines, start):
    """The index of the line that closes the first block opened at or after
    `start` (None when none opens before a `;` ends the item)."""
    depth, opened = 0, False
    for k in range(start, len(lines)):
        for ch in lines[k]:
            if ch == "{":
                depth += 1; opened = True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return k
            elif ch == ";" and not opened and depth == 0:
                return None
    return None


def scan(path):
    """(product lines, [(line, name, length)], test module files) of one file."""
    text = open(path, encoding="utf-8").read()
    lines = blank_code(text).split("\n")
    test_lines, fns, test_files = set(), [], []
    k = 0
    while k < len(lines):
        if TEST_MOD.match(lines[k]):
            # the item after #[cfg(test)] (and any further attributes)
            j = k + 1
            while j < len(lines) and lines[j].strip().startswith("#["):
                j += 1
            m = MOD_DECL.match(lines[j]) if j < len(lines) else None
            if m and m.group(2) == ";":
                test_files.append(m.group(1))
            elif m:
                end = block_end(lines, j)
                if end is not None:
                    test_lines.update(range(k, end + 1))
                    k = end + 1
                    continue
        m = FN.match(lines[k])
        if m:
            end = block_end(lines, k)
            if end is not None:
                fns.append((k + 1, m.group(1), end - k + 1))
        k += 1
    product = len(text.rstrip("\n").split("\n")) - len(test_lines)
    return product, fns, test_files


CITED = re.compile(r"`([A-Za-z0-9_./-]+\.rs)`")


def readme_paths(root):
    """[(readme, line, cited)] for every `.rs` path a README cites that does
    not exist: relative to the README's folder, its src/, or the repository;
    a bare file name anywhere under the README's folder."""
    readmes = [os.path.join(root, "README.md")] + [
        os.path.join(root, c, "README.md") for c in CRATES
    ]
    missing = []
    for readme in readmes:
        if not os.path.exists(readme):
            continue
        here = os.path.dirname(readme)
        names = None
        for n, line in enumerate(open(readme, encoding="utf-8"), 1):
            for cited in CITED.findall(line):
                if "/" not in cited:
                    if names is None:
                        names = set()
                        for d, dirs, fs in os.walk(here):
                            dirs[:] = [x for x in dirs if x not in ("target", ".git", "node_modules")]
                            names.update(fs)
                    ok = cited in names
                else:
                    ok = any(os.path.isfile(os.path.join(b, cited)) for b in (here, os.path.join(here, "src"), root))
                if not ok:
                    missing.append((os.path.relpath(readme, root), n, cited))
    return missing


def module_dir(path):
    base = os.path.basename(path)
    if base in ("mod.rs", "lib.rs", "main.rs"):
        return os.path.dirname(path)
    return path[:-3]


def main():
    files, test_files, over = [], set(), 0
    for crate in CRATES:
        src = os.path.join(root, crate, "src")
        for d, _, names in os.walk(src):
            files += [os.path.join(d, f) for f in names if f.endswith(".rs")]
    results = {}
    for f in sorted(files):
        product, fns, tests = scan(f)
        results[f] = (product, fns)
        for t in tests:
            for cand in (os.path.join(module_dir(f), t + ".rs"), os.path.join(module_dir(f), t, "mod.rs")):
                test_files.add(cand)
    for f in sorted(results):
        if f in test_files or any(f.startswith(os.path.dirname(t) + os.sep) for t in test_files if t.endswith("mod.rs")):
            continue
        rel = os.path.relpath(f, root)
        product, fns = results[f]
        if product > max_file:
            print(f"file  {rel}  {product}"); over += 1
        for line, name, length in fns:
            if length > max_fn and f"{rel}:{name}" not in ALLOWED:
                print(f"fn    {rel}:{line}  {name}  {length}"); over += 1
    for readme, n, cited in readme_paths(root):
        print(f"path  {readme}:{n}  {cited}  (no such file)"); over += 1
    for key in sorted(ALLOWED):
        path, name = key.split(":")
        found = [l for (_, n, l) in results.get(os.path.join(root, path), (0, []))[1] if n == name]
        if not found or max(found) <= max_fn:
            print(f"stale allowance  {key}  (no longer over {max_fn} lines: remove it)"); over += 1
    print(f"renovation-check: {over} over the limits ({max_file} lines a file, {max_fn} a function) or cited and missing", file=sys.stderr)
    sys.exit(1 if over else 0)


main()
PY
