"""What is missing from a report: the ``bench`` commands that fill its empty cells."""

from __future__ import annotations

from harness.publishing.report.model import ReportTable


def missing_commands(tables: list[ReportTable]) -> list[str]:
    """The commands that fill the empty cells, one per line, with ``#`` comment lines.

    Per table: ``bench run``/``bench eval`` for cells without a completed run, ``bench eval``
    for completed runs that lack an attack, then (commented as such) the commands that fill
    cells held only by shorter-schedule runs with the paper's schedule. A command, or a run an
    earlier command already creates, is listed once.
    """
    done_commands: set[str] = set()
    done_ids: set[str] = set()
    lines = []

    def take(command: str, ref_ids: list[str]) -> str | None:
        if command in done_commands or (ref_ids and set(ref_ids) <= done_ids):
            return None
        done_commands.add(command)
        done_ids.update(ref_ids)
        return command

    for table in tables:
        empty, evals, short = [], [], []
        missing = {tuple(f.ref_ids) for f in table.fills if not f.filled}
        for f in table.fills:
            if not f.filled:
                if c := take(f.command, f.ref_ids):
                    empty.append(c)
                continue
            for run_id in f.runs:
                for column in dict.fromkeys(f.not_evaluated):
                    flag = (
                        "--suite transfer"
                        if column.startswith("transfer/")
                        else (f"--attack {column}")
                    )
                    if c := take(f"bench eval {run_id} {flag}", []):
                        evals.append(c)
            if f.short and (c := take(f.command, f.ref_ids)):
                short.append(c)
        head = f"# {table.title}: {len(missing)} missing run(s)"
        if len(empty) < len(missing):
            head += f", {len(missing) - len(empty)} of them created by a command above"
        if evals:
            head += f"; {len(evals)} evaluation(s) missing"
        lines.append(head)
        lines += empty + evals
        if short:
            lines.append("# cells filled only by shorter-schedule runs; the paper's schedule:")
            lines += short
    return lines
