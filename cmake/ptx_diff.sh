#!/usr/bin/env bash
# The PTX of every CUDA translation unit oq builds (tests/, bench/, examples/),
# with symbol names normalised, compared between a git revision and the
# working tree: a structural change of include/oq/cuda/ (issue 24) must leave
# the instruction stream of every kernel instantiation the same.
#
#   bash cmake/ptx_diff.sh [REF]     REF (default: main) against the working tree;
#                                    exit 0 when every function's PTX is the same
#   bash cmake/ptx_diff.sh --keep    the same, keeping the raw PTX next to the normalised
#   PTX_ARCHS="90a" PTX_ONLY=gemm_w4a4 bash cmake/ptx_diff.sh
#                                    only those architectures and the .cu files whose
#                                    path matches the regex (the REF side is always
#                                    built whole, once)
#
# No GPU is needed: nvcc -ptx only. Flags are CMake's own: each tree is
# configured (CUDA, tests, examples, benchmarks; build/ptx/) and every .cu of
# its build.ninja is compiled with that target's FLAGS, INCLUDES and DEFINES,
# the --generate-code list replaced by one virtual architecture per run
# (compute_80, compute_89, compute_90a; PTX_ARCHS overrides). The header
# self-containment check's .cu files instantiate nothing and are left out.
#
# Normalisation (what may change without changing the code): every mangled
# name (_Z…) becomes S<i>, numbered by first appearance inside its function
# (so calls and shared-memory symbols keep their identity), parameter names
# become S<i>_param_<j>, the function number in basic-block labels and local
# depots ($L__BB<f>_<b>, __local_depot<f>) is dropped, comments go. Each
# function (.entry/.func) is one record; a file's records are compared as a
# multiset, so reordered instantiations compare equal. Where they differ, a
# second comparison also renumbers the virtual registers (%r, %rd, %f, %p, …)
# and labels of each function by first appearance, and failing that looks for
# any bijection of the registers (two accumulators both set to 0 may be
# numbered the other way round): "same up to register numbering" is the same
# instruction stream on the same operands, where only nvcc's front end
# numbered its values differently (ptxas allocates the registers anew anyway). Kernels that exist only on one side are listed with
# their demangled names, and a function whose body changed is shown as a
# unified diff against the nearest one of the other side.
#
# Cost on 2 cores: about 4 s per file and architecture (nvcc's front end;
# ptxas is not run), ~2 minutes per tree; the REF side is cached per commit
# in build/ptx/ref-<hash>.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

keep=0
ref=main
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) ref="$arg" ;;
  esac
done
archs=(${PTX_ARCHS:-80 89 90a})
nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc_bin" ] || { echo "ptx_diff: nvcc not found" >&2; exit 2; }
out="$root/build/ptx"
mkdir -p "$out"

# configure <source dir> <build dir>
configure() {
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc_bin" \
    -DOQ_ENABLE_CUDA=ON -DOQ_BUILD_TESTS=ON -DOQ_BUILD_EXAMPLES=ON -DOQ_BUILD_BENCHMARKS=ON -DOQ_BUILD_TOOLS=OFF \
    "-DCMAKE_CUDA_ARCHITECTURES=80;89;90a" >"$2.configure.log" 2>&1 ||
    { echo "ptx_diff: cmake failed, see $2.configure.log" >&2; exit 2; }
}

# compile_commands <source dir> <build dir>: "relative.cu<TAB>flags" per CUDA
# object of build.ninja (header check excluded).
compile_commands() {
  awk -v src="$1/" '
    /^build .*\.cu\.o: CUDA_COMPILER/ {
      file = $0; sub(/^[^:]*: CUDA_COMPILER[^ ]* /, "", file); sub(/ .*/, "", file)
      if (index(file, src) != 1 || file ~ /header_check/) { file = ""; next }
      file = substr(file, length(src) + 1); flags = ""; defines = ""; includes = ""; next
    }
    file != "" && /^  DEFINES = / { defines = substr($0, 13) }
    file != "" && /^  FLAGS = / { flags = substr($0, 11) }
    file != "" && /^  INCLUDES = / { includes = substr($0, 14) }
    file != "" && /^$/ { print file "\t" defines " " includes " " flags; file = "" }
  ' "$2/build.ninja" | sort -u
}

# ptx_tree <source dir> <label> <file regex> <archs...>: normalised PTX of
# every .cu (matching the regex) under build/ptx/<label>/.
ptx_tree() {
  local src=$1 label=$2 only=$3 dir="$out/$2"
  shift 3
  local -a tree_archs=("$@")
  if [ -f "$dir/.done" ]; then return; fi
  rm -rf "$dir" && mkdir -p "$dir"
  configure "$src" "$dir/cmake"
  compile_commands "$src" "$dir/cmake" | { grep -E "^[^	]*($only)" || true; } >"$dir/commands.tsv"
  [ -s "$dir/commands.tsv" ] || { echo "ptx_diff: no CUDA sources in $dir/cmake/build.ninja" >&2; exit 2; }
  local failed=0
  while IFS=$'\t' read -r file flags; do
    for arch in "${tree_archs[@]}"; do
      local flat="${file//\//__}.compute_$arch"
      local -a args=()
      for f in $flags; do
        case "$f" in --generate-code=* | -gencode* | -arch=* | --generate-code) ;; *) args+=("$f") ;; esac
      done
      if ! (cd "$dir/cmake" && "$nvcc_bin" "${args[@]}" -arch="compute_$arch" -ptx "$src/$file" \
              -o "$dir/$flat.ptx") 2>"$dir/$flat.log"; then
        echo "ptx_diff: nvcc failed on $file for compute_$arch ($label), see $dir/$flat.log" >&2
        failed=1
        continue
      fi
      python3 "$out/normalize.py" "$dir/$flat.ptx" "$dir/$flat.norm" "$dir/$flat.regs" "$dir/$flat.names"
      [ "$keep" = 1 ] || rm -f "$dir/$flat.ptx"
    done
  done <"$dir/commands.tsv"
  [ "$failed" = 0 ] || exit 1
  touch "$dir/.done"
}

cat >"$out/normalize.py" <<'PY'
# normalize.py <in.ptx> <out.norm> <out.regs> <out.names>: one record per PTX
# function, names normalised (.norm), and in .regs also the virtual registers
# and basic-block labels renumbered by first appearance (the same records in
# the same order); the module-level declarations first; .names the demangled
# name of each record.
import collections, re, subprocess, sys

text = open(sys.argv[1]).read().splitlines()
mangled = re.compile(r"\b_Z[\w$]+")
label = re.compile(r"\$L__BB\d+_")
depot = re.compile(r"__local_depot\d+")
head = re.compile(r"^(\.visible |\.weak |\.extern )*\.(entry|func)\b")
register = re.compile(r"%([a-z]+)(\d+)\b")
block = re.compile(r"\$L__BB_(\d+)")

def normalise(lines):
    names = {}
    def sub(m):
        s = m.group(0)
        p = re.match(r"^(.*)_param_(\d+)$", s)
        base, suffix = (p.group(1), "_param_" + p.group(2)) if p else (s, "")
        names.setdefault(base, "S%d" % len(names))
        return names[base] + suffix
    out = []
    for line in lines:
        line = line.split("//")[0].rstrip()
        if not line.strip():
            continue
        line = mangled.sub(sub, line)
        line = label.sub("$L__BB_", line)
        line = depot.sub("__local_depot", line)
        out.append(line)
    return out, list(names)

def renumber(lines):
    """Virtual registers (per class: %r, %rd, %f, %p, …) and labels renamed
    in order of first appearance; the .reg declarations lose their counts."""
    seen, count, labels = {}, collections.Counter(), {}
    def reg(m):
        key = (m.group(1), m.group(2))
        if key not in seen:
            seen[key] = "%%%s%d" % (m.group(1), count[m.group(1)])
            count[m.group(1)] += 1
        return seen[key]
    def lab(m):
        return "$L__BB_%d" % labels.setdefault(m.group(1), len(labels))
    out = []
    for line in lines:
        if line.lstrip().startswith(".reg "):
            out.append(re.sub(r"<\d+>", "<>", line))
        else:
            out.append(block.sub(lab, register.sub(reg, line)))
    return out

records, module, current, depth = [], [], None, 0
for line in text:
    if current is None and head.match(line):
        current = [line]
        depth = line.count("{") - line.count("}")
        continue
    if current is not None:
        current.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0 and "{" in "".join(current) and line.strip() == "}":
            records.append(current)
            current = None
        elif depth == 0 and line.rstrip().endswith(";") and "{" not in "".join(current):
            records.append(current)  # a declaration (.extern .func …;)
            current = None
        continue
    module.append(line)

normalised = []
for r in records:
    body, names = normalise(r)
    first = names[0] if names else r[0].split()[-1].split("(")[0]
    normalised.append(("\n".join(body), "\n".join(renumber(body)), first))
# Module-level lines (.target, .shared/.global declarations): names numbered per line.
mod = sorted(n for l in module for n in normalise([l])[0])
normalised.sort()
demangled = subprocess.run(["c++filt"], input="\n".join(n for _, _, n in normalised), capture_output=True,
                           text=True).stdout.splitlines() if normalised else []
for path, which in ((sys.argv[2], 0), (sys.argv[3], 1)):
    with open(path, "w") as f:
        f.write("== module\n" + "\n".join(mod) + "\n")
        for record in normalised:
            f.write("== function\n" + record[which] + "\n")
with open(sys.argv[4], "w") as f:
    for (_, _, name), pretty in zip(normalised, demangled):
        f.write("%s\t%s\n" % (pretty, name))
PY

cat >"$out/compare.py" <<'PY'
# compare.py <ref dir> <new dir> <archs> <file regex>: per file and
# architecture, the multiset of normalised functions: "same" when every
# function's names-normalised PTX is REF's; "same up to register numbering"
# when it is once the virtual registers and labels are renumbered too (the
# same instructions on the same operands, only the front end numbered its
# values differently); otherwise the differences, as diffs of the renumbered
# form. Exits 1 on a difference beyond register numbering.
import collections, difflib, os, re, sys

ref_dir, new_dir = sys.argv[1], sys.argv[2]
archs = ["compute_" + a for a in sys.argv[3].split()]
only = re.compile(sys.argv[4].replace("/", "__")) if sys.argv[4] else None

def load(path):
    if not os.path.exists(path):
        return None
    chunks = open(path).read().split("== ")[1:]
    module = [c for c in chunks if c.startswith("module\n")]
    funcs = [c[len("function\n"):] for c in chunks if c.startswith("function\n")]
    return (module[0] if module else ""), funcs

register = re.compile(r"%[a-z]+\d+\b")
constant_def = re.compile(r"^\s*mov\.(\w+)\s+(%[a-z]+\d+), (-?\d+|0[fFdD][0-9A-Fa-f]+|%[a-z]+\d+);$")
block_end = re.compile(r"^\$L__BB_\d+:$|^\s*(@%p\d+ )?bra|^\s*ret;|^\s*bar\.")

def same_up_to_register_bijection(a, b):
    """Whether b is a with its virtual registers renamed by a bijection (per
    register class). Moves of constants into registers (or copies of
    registers holding a known constant) do not fix the bijection, since two
    registers both set to 0 may swap roles: the other instructions fix it,
    then within each basic block those definitions must match one for one
    under it, or as a multiset where no other instruction between the first
    and the last of them touches their registers (so that their order does
    not matter)."""
    la, lb = a.splitlines(), b.splitlines()
    if len(la) != len(lb):
        return False
    forward, backward = {}, {}
    def cls(r):
        return r.rstrip("0123456789")
    def bind(x, y):
        return cls(x) == cls(y) and forward.setdefault(x, y) == y and backward.setdefault(y, x) == x
    consts = [{}, {}]   # per side: register -> known constant in this block
    blocks = []         # per basic block: (constant definitions, other instructions' registers by line)
    pending, touched = [], []
    def constant(line, side):
        m = constant_def.match(line)
        if not m:
            return None
        value = m.group(3)
        if value.startswith("%"):
            if value not in consts[side]:
                return None
            value = consts[side][value]
        return m.group(1), m.group(2), value
    for i, (x, y) in enumerate(zip(la, lb)):
        cx, cy = constant(x, 0), constant(y, 1)
        if cx and cy:
            pending.append((i, cx, cy))
            consts[0][cx[1]], consts[1][cy[1]] = cx[2], cy[2]
            continue
        if register.sub("%", x) != register.sub("%", y):
            return False
        rx, ry = register.findall(x), register.findall(y)
        if not all(bind(u, v) for u, v in zip(rx, ry)):
            return False
        touched.append((i, set(rx) | set(ry)))
        for side, regs in ((0, rx), (1, ry)):
            for r in regs:
                consts[side].pop(r, None)
        if block_end.match(x):
            blocks.append((pending, touched))
            pending, touched, consts = [], [], [{}, {}]
    blocks.append((pending, touched))
    for pending, touched in blocks:
        if not pending:
            continue
        # One for one where that agrees with the bijection (binding registers
        # that only constants define).
        f, g, ok = dict(forward), dict(backward), True
        for _, (t, d, v), (u, e, w) in pending:
            if (t, v) != (u, w) or cls(d) != cls(e) or f.setdefault(d, e) != e or g.setdefault(e, d) != d:
                ok = False
                break
        if ok:
            forward.update(f)
            backward.update(g)
            continue
        # Otherwise as a multiset of definitions that commute.
        first, last = pending[0][0], pending[-1][0]
        dests = {d[1] for _, d, _ in pending} | {d[1] for _, _, d in pending}
        if any(first < i < last and dests & regs for i, regs in touched):
            return False
        left = sorted((t, forward.get(d, "?" + d), v) for _, (t, d, v), _ in pending)
        right = sorted((t, e if e in backward else "?", v) for _, _, (t, e, v) in pending)
        left = sorted((t, d if not d.startswith("?") else "?", v) for t, d, v in left)
        if left != right:
            return False
    return True

def names(path):
    return [l.split("\t")[0] for l in open(path).read().splitlines()] if os.path.exists(path) else []

files = sorted({f[:-5] for d in (ref_dir, new_dir) for f in os.listdir(d)
                if f.endswith(".norm") and f[:-5].rsplit(".", 1)[1] in archs
                and (only is None or only.search(f.rsplit(".", 2)[0]))})
bad = renumbered = total = 0
for f in files:
    ref, new = load(os.path.join(ref_dir, f + ".norm")), load(os.path.join(new_dir, f + ".norm"))
    if ref is None or new is None:
        print("%s: only in %s" % (f, "the working tree" if ref is None else "REF"))
        bad += ref is not None
        continue
    total += len(ref[1])
    if ref[0] == new[0] and collections.Counter(ref[1]) == collections.Counter(new[1]):
        print("%s: %d functions, same" % (f, len(new[1])))
        continue
    ref, new = load(os.path.join(ref_dir, f + ".regs")), load(os.path.join(new_dir, f + ".regs"))
    rn, nn = names(os.path.join(ref_dir, f + ".names")), names(os.path.join(new_dir, f + ".names"))
    rc, nc = collections.Counter(ref[1]), collections.Counter(new[1])
    missing, extra = rc - nc, nc - rc
    # A function whose first-appearance numbering differs can still be the
    # same code under another bijection of its registers (two accumulators
    # both initialised to 0, numbered the other way round): pair those.
    for body in list(missing.elements()):
        for other in list(extra.elements()):
            if same_up_to_register_bijection(body, other):
                missing[body] -= 1
                extra[other] -= 1
                break
    missing, extra = +missing, +extra
    status = []
    if ref[0] != new[0]:
        status.append("module-level declarations differ")
    if missing:
        status.append("%d function(s) of REF not found unchanged" % sum(missing.values()))
    if extra:
        status.append("%d new function(s)" % sum(extra.values()))
    if not status:
        print("%s: %d functions, same up to register numbering" % (f, len(new[1])))
        renumbered += 1
        continue
    print("%s: %d functions, %s" % (f, len(new[1]), "; ".join(status)))
    if ref[0] != new[0]:
        bad += 1
        sys.stdout.writelines(difflib.unified_diff(ref[0].splitlines(True), new[0].splitlines(True), "REF", "new"))
    if missing:
        bad += 1
    extra_bodies = list(extra.elements())
    for body in missing.elements():
        i = ref[1].index(body)
        print("  REF only: %s" % (rn[i] if i < len(rn) else "?"))
        if extra_bodies:
            near = max(extra_bodies, key=lambda b: difflib.SequenceMatcher(None, body, b, autojunk=False).quick_ratio())
            j = new[1].index(near)
            print("    nearest new function: %s" % (nn[j] if j < len(nn) else "?"))
            diff = list(difflib.unified_diff(body.splitlines(True), near.splitlines(True), "REF", "new", n=2))
            sys.stdout.writelines(diff[:200])
            if len(diff) > 200:
                print("    … %d more diff lines" % (len(diff) - 200))
    for body in extra.elements():
        j = new[1].index(body)
        print("  new only: %s" % (nn[j] if j < len(nn) else "?"))
print("ptx_diff: %d REF functions compared, %s%s" % (
    total, "no difference" if bad == 0 else "%d file(s) differ" % bad,
    "" if renumbered == 0 else " (%d file(s) the same only up to register numbering)" % renumbered))
sys.exit(1 if bad else 0)
PY

hash=$(git rev-parse --verify "$ref^{commit}")
ref_src="$out/ref-$hash/src"
if [ ! -f "$out/ref-$hash/ptx/.done" ]; then
  rm -rf "$out/ref-$hash" && mkdir -p "$ref_src"
  git archive "$hash" | tar -x -C "$ref_src"
fi
echo "ptx_diff: $ref ($hash) against the working tree, compute_${archs[*]}" >&2
ptx_tree "$ref_src" "ref-$hash/ptx" "" 80 89 90a
rm -rf "$out/work"
ptx_tree "$root" work "${PTX_ONLY:-}" "${archs[@]}"
python3 "$out/compare.py" "$out/ref-$hash/ptx" "$out/work" "${archs[*]}" "${PTX_ONLY:-}"
