"""The device suite's table: every part's figures, or FAILED with the error's last line.

    python -m benchmarks.device_report WORK_DIR --out OUT_DIR

`benchmarks/device_suite.sh` runs each part in its own process; a part leaves in WORK_DIR
`<part>.log` (its output), `<part>.status` (exit code, seconds, time limit) and, when it got that
far, `<part>.json` (`write_part`: table rows and raw figures). This module reads only those
files and imports no JAX, so the table is written even when every measurement crashed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def row(figure: str, value: str, goal: str = "", met: bool | None = None) -> dict:
    """One line of the table: a figure, its value, the issue's goal for it and whether it is met."""
    return {"figure": figure, "value": value, "goal": goal, "met": met}


def write_part(path: str | None, rows: list[dict], raw: dict) -> None:
    """A part's result for the table (`rows`) and its raw figures (`raw`), as JSON at `path` (None: nowhere)."""
    if path:
        Path(path).write_text(json.dumps({"rows": rows, "raw": raw}, indent=1, default=str))


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        goal = f"   goal {r['goal']}: {'met' if r['met'] else 'NOT met'}" if r["met"] is not None else ""
        print(f"  {r['figure']}: {r['value']}{goal}", flush=True)


def last_line(log: Path) -> str:
    """The last non-empty line of a log: a Python traceback ends with the exception."""
    if not log.exists():
        return "no log"
    lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1][:300] if lines else "empty log"


def read_status(path: Path) -> dict:
    """`rc=.. elapsed=.. limit=..` as written by the suite (missing: the part has not run)."""
    if not path.exists():
        return {}
    return {k: int(v) for k, v in (item.split("=") for item in path.read_text().split())}


def part_result(work: Path, part: str) -> dict:
    status = read_status(work / f"{part}.status")
    doc = json.loads((work / f"{part}.json").read_text()) if (work / f"{part}.json").exists() else None
    if not status:
        return {"part": part, "status": "NOT RUN", "elapsed_s": None, "rows": [], "raw": None}
    rc, log = status["rc"], work / f"{part}.log"
    if rc == -1:  # the suite's deadline left it no time
        return {"part": part, "status": "SKIPPED (no time left)", "elapsed_s": 0, "rows": [], "raw": None}
    if rc == 0 and doc is not None:
        state, rows = "ok", doc["rows"]
    elif rc == 0:  # a part without figures of its own (the tests): its last line is the result
        state, rows = "ok", [row("result", last_line(log))]
    else:
        why = f"timed out after {status['limit']} s" if rc in (124, 137) else f"exit {rc}"
        state, rows = f"FAILED ({why})", [row("error", last_line(log))]
    return {"part": part, "status": state, "elapsed_s": status["elapsed"], "rows": rows,
            "raw": None if doc is None else doc["raw"]}


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def markdown(results: list[dict], title: str) -> str:
    out = [f"### {title}", "", "| part | status | s | figure | value | goal | met |", "|---|---|---|---|---|---|---|"]
    for res in results:
        rows = res["rows"] or [row("", "")]
        for i, r in enumerate(rows):
            head = (res["part"], res["status"], "" if res["elapsed_s"] is None else res["elapsed_s"]) if i == 0 \
                else ("", "", "")
            met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
            out.append("| " + " | ".join(_cell(x) for x in (*head, r["figure"], r["value"], r["goal"], met)) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="the folder the parts wrote to")
    parser.add_argument("--parts", required=True, help="comma-separated part names, in table order")
    parser.add_argument("--out", type=Path, required=True, help="writes summary.md and summary.json here")
    parser.add_argument("--title", default="Device suite")
    args = parser.parse_args(argv)
    results = [part_result(args.work, p) for p in args.parts.split(",") if p]
    text = markdown(results, args.title)
    (args.out / "summary.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps({"title": args.title, "parts": results}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
