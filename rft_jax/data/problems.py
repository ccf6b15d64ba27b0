"""A validation finding: where it is, what is wrong, and how to fix it.

Every check reports through this one type so `data validate`, `load_dataset` and
the error raised on load all print the same `FILE:LINE: field: problem -> fix`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Problem:
    line: int  # 1-based line in the file; 0 for whole-file findings
    field: str
    problem: str
    fix: str
    severity: str = "error"  # "error" blocks training; "warning" does not

    def format(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        tag = "" if self.severity == "error" else "warning: "
        return f"{where}: {tag}{self.field}: {self.problem} -> {self.fix}"


class DatasetError(ValueError):
    """Raised by `load_dataset` when a file has errors; the message lists every one."""

    def __init__(self, path: str, problems: list[Problem]):
        self.path = path
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        lines = [p.format(path) for p in errors]
        super().__init__(f"{len(errors)} problem(s) in {path}:\n" + "\n".join(lines))
