"""Turns the drains that bench/decode/run.sh timed into its report: medians, rates, ratios.

Reads a TSV of drains (phase, config, repetition, wall seconds, walsender CPU seconds) and a TSV
of errors (config, message). Prints the table; the targets are information, never a verdict on
the exit status.
"""
import argparse
import statistics
import sys

LABELS = {
    "bw_binary": "breakwater format=binary",
    "bw_json": "breakwater format=json",
    "w2j_v1": "wal2json format-version=1",
    "w2j_v2": "wal2json format-version=2",
    "pgoutput": "pgoutput proto 1, FOR ALL TABLES",
    "floor": "floor: pgoutput, empty publication",
    "bw_hot": "breakwater binary tables=public.hot",
    "w2j_v2_hot": "wal2json v2 add-tables=public.hot",
    "floor_hot": "floor: pgoutput, empty publication",
}
ORDER = list(LABELS)
FLOOR = {"1": "floor", "2": "floor_hot"}
PHASE_OF = {n: ("2" if n in ("bw_hot", "w2j_v2_hot", "floor_hot") else "1") for n in LABELS}
PHASES = {
    "1": "phase 1: public.main only: {ins} inserts in 1000-row txns, then {upd} updates in 10k-row txns",
    "2": "phase 2: the same transactions, 90% of each one's rows in public.main, 10% in public.hot",
}
# (config, reference config, bound, how the reference is named)
TARGETS = [
    ("bw_binary", "floor", 1.25, "floor"),
    ("bw_json", "w2j_v1", 1.00, "wal2json v1"),
    ("bw_hot", "floor_hot", 1.10, "floor (phase 2)"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drains", required=True)
    ap.add_argument("--errors", required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--changes", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--elapsed", default="?")
    ap.add_argument("--pg", default="")
    ap.add_argument("--plugin", default="")
    a = ap.parse_args()

    wall, cpu = {}, {}
    with open(a.drains) as f:
        for line in f:
            _phase, name, _rep, w, c = line.rstrip("\n").split("\t")
            wall.setdefault(name, []).append(float(w))
            cpu.setdefault(name, []).append(float(c))
    errors = {}
    with open(a.errors) as f:
        for line in f:
            if "\t" in line:
                name, msg = line.rstrip("\n").split("\t", 1)
                errors.setdefault(name, []).append(msg)

    sizes = {}
    with open(a.sizes) as f:
        for line in f:
            name, n = line.split()
            sizes[name] = int(n)

    med_wall = {n: statistics.median(v) for n, v in wall.items()}
    med_cpu = {n: statistics.median(v) for n, v in cpu.items()}

    def ratio(n, ref, table):
        if n in table and ref in table and table[ref] > 0:
            return table[n] / table[ref]
        return None

    def fmt_ratio(r):
        return "-" if r is None else f"{r:.2f}x"

    out = []
    out.append("Breakwater decoding benchmark (bench/decode/run.sh%s)" % (" --quick" if a.quick else ""))
    out.append(f"{a.pg.strip()}; {a.reps} drain(s) per config, median shown; whole run {a.elapsed} s")
    out.append("wall = pg_recvlogical --start -E <end> -f /dev/null, connect to exit; "
               "CPU = the walsender's user+system time; "
               "output MB = bytes written, from one more untimed drain")
    out.append("")
    head = ("config", "median s", "min-max s", "changes/s", "walsender CPU s", "x floor wall", "x floor CPU", "output MB")
    widths = (36, 8, 11, 10, 15, 12, 11, 9)

    def row(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    for phase in ("1", "2"):
        names = [n for n in ORDER if PHASE_OF[n] == phase and (n in wall or n in errors)]
        if not names:
            continue
        out.append(PHASES[phase].format(ins=a.changes // 2, upd=a.changes // 2)
                   + f" ({a.changes} changes)")
        out.append(row(head))
        out.append(row(tuple("-" * w for w in widths)))
        for n in names:
            if n not in wall:
                out.append(row((LABELS[n], "error", "", "", "", "", "", "")))
                continue
            out.append(row((
                LABELS[n],
                f"{med_wall[n]:.2f}",
                f"{min(wall[n]):.2f}-{max(wall[n]):.2f}",
                f"{a.changes / med_wall[n]:,.0f}",
                f"{med_cpu[n]:.2f}",
                fmt_ratio(ratio(n, FLOOR[phase], med_wall)),
                fmt_ratio(ratio(n, FLOOR[phase], med_cpu)),
                f"{sizes[n] / 1e6:.1f}" if n in sizes else "-",
            )))
        out.append("")

    out.append("targets (information only: the exit status never depends on speed)")
    for n, ref, bound, ref_label in TARGETS:
        r = ratio(n, ref, med_wall)
        rc = ratio(n, ref, med_cpu)
        if r is None:
            out.append(f"  {LABELS[n]:36}  not measured")
            continue
        verdict = "within" if r <= bound else "over"
        out.append(f"  {LABELS[n]:36}  {r:.2f}x {ref_label} wall ({rc:.2f}x CPU)"
                   f"   target <= {bound:.2f}x: {verdict}")
    if errors:
        out.append("")
        out.append("errors")
        for n, msgs in errors.items():
            for m in msgs:
                out.append(f"  {LABELS.get(n, n)}: {m}")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
