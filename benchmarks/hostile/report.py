"""The report: one line per case as it finishes, the table per kind, the cases not held, the RESULTS.md section."""

from __future__ import annotations

from .runner import KINDS
from .verdicts import HARNESS, HELD, RANK, SEVERITY


def format_line(r: dict) -> str:
    state = "HELD" if r["outcome"] == HELD else f"NOT HELD ({r['outcome']})" if r["outcome"] != HARNESS else "HARNESS ERROR"
    return f"[{r['kind']}] {r['name']}: {state}: {r['detail']}"


def table(results: list[dict], kinds: list[str]) -> str:
    rows = ["| kind | cases | held | not held | worst outcome | example of the worst |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for kind in kinds:
        rs = [r for r in results if r["kind"] == kind]
        if not rs:
            continue
        held = sum(r["outcome"] == HELD for r in rs)
        bad = [r for r in rs if r["outcome"] != HELD]
        worst_cell, example = "-", ""
        if bad:
            w = min(bad, key=lambda r: RANK[r["outcome"]])
            counts = ", ".join(
                f"{sum(r['outcome'] == o for r in bad)} {o}" for o in (HARNESS, *SEVERITY) if any(r["outcome"] == o for r in bad)
            )
            worst_cell, example = f"{w['outcome']} ({counts})", f"{w['name']}: {w['detail']}"
            example = example if len(example) <= 200 else example[:197] + "..."
        rows.append(f"| {KINDS[kind]} | {len(rs)} | {held} | {len(bad)} | {worst_cell} | {example.replace('|', '/')} |")
    return "\n".join(rows)


def not_held_list(results: list[dict]) -> list[str]:
    bad = [r for r in results if r["outcome"] != HELD]
    bad.sort(key=lambda r: (list(KINDS).index(r["kind"]), RANK[r["outcome"]], r["index"]))
    return [f"- [{KINDS[r['kind']]}] **{r['outcome']}**: {r['name']}: {r['detail']}".replace("\n", " ") for r in bad]


def print_summary(results: list[dict], kinds: list[str], *, seconds: float, jobs: int, fresh: bool) -> None:
    """The table, every case not held, the slowest cases and the time per kind, on stdout."""
    bad = not_held_list(results)
    print()
    print(table(results, kinds))
    print()
    if bad:
        print(f"NOT HELD ({len(bad)}):")
        print("\n".join(bad))
    slow = sorted(results, key=lambda r: -r["seconds"])[:5]
    print("\nslowest cases: " + "; ".join(f"{r['name'][:60]} {r['seconds']:.0f} s" for r in slow))
    per_kind = ", ".join(f"{k} {sum(r['seconds'] for r in results if r['kind'] == k):.0f} s" for k in kinds)
    print(f"case seconds per kind (summed over {jobs} workers): {per_kind}")
    print(f"\n{len(results)} cases in {seconds / 60:.1f} min ({'fresh processes' if fresh else 'forked children'}, {jobs} at a time)")


def results_section(results: list[dict], kinds: list[str], *, seconds: float, jobs: int, fresh: bool, layout: str, notes: list[str]) -> str:
    """The body of the RESULTS.md section."""
    bad = not_held_list(results)
    return (
        f"{len(results)} cases in {seconds / 60:.1f} min; artifact layout: {layout}; children: "
        f"{'fresh processes' if fresh else 'forked from a warm interpreter'}, {jobs} at a time.\n\n{table(results, kinds)}\n\n"
        + (f"Not held ({len(bad)}):\n\n" + "\n".join(bad) if bad else "Every case held.")
        + ("\n\nNotes: " + "; ".join(notes) if notes else "")
    )
