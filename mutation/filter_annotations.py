"""A cosmic-ray filter: skip mutations inside type annotations of modules with
`from __future__ import annotations`, which Python never evaluates (`Tensor | None` → `Tensor & None`
cannot change what the program does: equivalent mutants by construction).

Usage: python mutation/filter_annotations.py SESSION.sqlite
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from cosmic_ray.tools.filters.filter_app import FilterApp
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def annotation_spans(path: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    tree = ast.parse(Path(path).read_text())
    if not any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
               for n in tree.body):
        return []
    spans = []
    for node in ast.walk(tree):
        notes = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            notes = [arg.annotation for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if arg] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            notes = [node.annotation]
        spans += [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in notes if n is not None]
    return spans


class AnnotationFilter(FilterApp):
    def description(self):
        return __doc__

    def filter(self, work_db, args):
        cache: dict[str, list] = {}
        for item in work_db.pending_work_items:
            for m in item.mutations:
                spans = cache.setdefault(str(m.module_path), annotation_spans(str(m.module_path)))
                start, end = tuple(m.start_pos), tuple(m.end_pos)
                if any(a <= start and end <= b for a, b in spans):
                    work_db.set_result(item.job_id, WorkResult(output="Filtered: inside a type annotation (never evaluated)",
                                                               worker_outcome=WorkerOutcome.SKIPPED))
                    break


if __name__ == "__main__":
    sys.exit(AnnotationFilter().main())
