"""Command line: `python -m grader {grade,release,chapters}`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def _grade_in_subprocess(path: str, args) -> dict:
    """Grade one notebook in its own process (and kernel), killed after args.timeout seconds."""
    cmd = [sys.executable, "-m", "grader", "_grade-one", path,
           "--cell-timeout", str(args.cell_timeout)] + ([] if args.fast else ["--no-fast"])
    env = dict(os.environ)
    if args.jobs > 1:  # several kernels on few cores: one thread each
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"{path}: grading took longer than {args.timeout} s and was stopped"}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"{path}: the grading process failed ({tail[0]})"}


def write_csv(path: str, submissions: list[dict]) -> None:
    """One row per submission: path, chapter, score, max_score, then each exercise's score."""
    import csv

    names = []
    for sub in submissions:
        names += [e["name"] for e in sub["exercises"] if e["name"] not in names]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "chapter", "score", "max_score", *names])
        for sub in submissions:
            scores = {e["name"]: e["score"] for e in sub["exercises"]}
            writer.writerow([sub["path"], sub["chapter"], sub["score"], sub["max_score"],
                             *[scores.get(n, "") for n in names]])


def cmd_grade(args) -> int:
    from grader.grade import find_notebooks, format_table

    items = find_notebooks(args.paths)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda item: _grade_in_subprocess(str(item[1]), args), items))
    submissions, errors = [], []
    for (given, p), result in zip(items, results):
        if "ok" in result:
            submissions.append({"path": given, **result["ok"]})
        else:
            msg = result["error"]
            if p.is_dir():
                msg = f"{given}: no notebooks in this directory"
            errors.append(msg)
    if args.csv:
        write_csv(args.csv, submissions)
    if args.json:
        print(json.dumps({"submissions": submissions}, indent=2))
    else:
        print(format_table(submissions))
    for msg in errors:
        print(f"error: {msg}", file=sys.stderr)
    return 2 if errors else 0


def chapter_of(path, given: str | None) -> str:
    """The assignment a submission was handed in for: --chapter, else its folder or file name.

    A notebook's own metadata is never asked: a submission cannot choose its grader.
    """
    from pathlib import Path

    from grader.intake import SubmissionError
    from grader.registry import chapter_ids

    known = chapter_ids()
    if given:
        if given not in known:
            raise SubmissionError(f"unknown chapter {given!r} (known: {', '.join(known)})")
        return given
    p = Path(path)
    found = [part for part in [p.stem, *[q.name for q in p.parents]] if part in known]
    if not found:
        raise SubmissionError(f"{path}: cannot tell which chapter this was handed in for; put "
                              "it in a folder named after the chapter, or pass --chapter")
    return found[0]


def cmd_grade_one(args) -> int:
    """Worker: grade one notebook; the result goes to --result-file (never parsed from stdout)."""
    from pathlib import Path

    from grader.intake import SubmissionError, load_submission
    from grader.judge import Options, grade_notebook_node

    seed = os.environ.get("GRADER_RUN_SEED")
    options = Options(cell_timeout=args.cell_timeout, fast=args.fast, sandbox=args.sandbox,
                      memory_bytes=int(args.memory_gib * 2**30),
                      timeout=args.notebook_timeout,
                      salt=int(seed) if seed and seed.isdigit() else None)
    try:
        chapter = chapter_of(args.path, args.chapter)
        nb = load_submission(Path(args.path))
        result = {"ok": grade_notebook_node(nb, chapter, options)}
    except SubmissionError as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - e.g. no sandbox: one clear line
        from grader.sandbox import SandboxUnavailable

        if isinstance(exc, SandboxUnavailable):
            result = {"error": str(exc), "fatal": True}
        else:
            raise
    text = json.dumps(result)
    if args.result_file:
        tmp = args.result_file + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.result_file)
    else:
        print(text)
    return 0


def cmd_edition(args) -> int:
    from pathlib import Path

    from grader.edition import build

    dest = build(Path(args.dir), chapters=args.chapters or None, force=args.force,
                 archive=args.zip)
    print(f"wrote the student edition to {dest}")
    print("hand it to students as a zip (--zip), a git repository, or through JupyterHub "
          "with nbgitpuller; see README.md")
    return 0


def cmd_release(args) -> int:
    from grader.assign import check_release, release

    if args.check:
        problems = check_release(args.chapters or None)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("chapters/ differs from what solutions/ generates (listed above). If you "
                  "changed solutions/, regenerate with `make release` (it never replaces a "
                  "notebook someone edited without asking). If these are your answers as a "
                  "student, they are safe: nothing here touched them.", file=sys.stderr)
            return 1
        print("chapters/ is up to date with solutions/")
        return 0
    written = release(args.chapters or None, force=args.force)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("chapters/ was already up to date")
    return 0


def cmd_record(args) -> int:
    from grader.assign import record_checked_outputs, source_chapters

    for cid in args.chapters or source_chapters():
        print(f"recorded checked outputs in {record_checked_outputs(cid)}")
    return 0


def cmd_bench(args) -> int:
    from grader.bench import main as bench

    return bench(args.chapters or None, args.repeat)


def cmd_chapters(args) -> int:
    from grader.registry import chapter_ids, get_chapter

    for cid in chapter_ids():
        ch = get_chapter(cid)
        print(f"{cid}: {ch.title} ({len(ch.exercises)} exercises, {ch.max_score:g} points)")
        for ex in ch.exercises.values():
            print(f"    {ex.name} ({ex.points:g})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade submitted notebooks (files or directories)")
    g.add_argument("paths", nargs="+", metavar="PATH")
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument("--csv", metavar="FILE", help="also write the scores to a CSV file")
    g.add_argument("--timeout", type=int, default=900,
                   help="seconds allowed for one notebook (default 900)")
    g.add_argument("--cell-timeout", type=int, default=120,
                   help="seconds allowed for one cell; a slower cell is interrupted (default 120)")
    g.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded at once")
    g.add_argument("--no-fast", dest="fast", action="store_false",
                   help="run training cells at full length (default: GRADER_FAST=1)")
    g.set_defaults(func=cmd_grade)

    one = sub.add_parser("_grade-one", help=argparse.SUPPRESS)
    one.add_argument("path")
    one.add_argument("--result-file")
    one.add_argument("--chapter")
    one.add_argument("--cell-timeout", type=float, default=120)
    one.add_argument("--notebook-timeout", type=float, default=900)
    one.add_argument("--memory-gib", type=float, default=4)
    one.add_argument("--no-fast", dest="fast", action="store_false")
    one.add_argument("--no-sandbox", dest="sandbox", action="store_false")
    one.set_defaults(func=cmd_grade_one)

    e = sub.add_parser("edition", help="build the student edition (notebooks, checks, no answers)")
    e.add_argument("dir", metavar="DIR")
    e.add_argument("chapters", nargs="*", help="chapter ids (default: all)")
    e.add_argument("--zip", action="store_true", help="also write DIR.zip")
    e.add_argument("--force", action="store_true",
                   help="replace a non-empty DIR (the old one is kept as DIR.backup)")
    e.set_defaults(func=cmd_edition)

    r = sub.add_parser("release", help="generate chapters/ from solutions/ with nbgrader")
    r.add_argument("chapters", nargs="*", help="chapter ids (default: all)")
    r.add_argument("--check", action="store_true",
                   help="only check that chapters/ is what would be generated")
    r.add_argument("--force", action="store_true",
                   help="also replace notebooks changed since generation (kept as .backup files)")
    r.set_defaults(func=cmd_release)

    rec = sub.add_parser("record-outputs", help="run solution notebooks and store the outputs "
                         "of cells tagged nbval-check-output (what CI compares)")
    rec.add_argument("chapters", nargs="*")
    rec.set_defaults(func=cmd_record)

    b = sub.add_parser("bench", help="time visible and hidden checks and grading per chapter")
    b.add_argument("chapters", nargs="*")
    b.add_argument("--repeat", type=int, default=3)
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("chapters", help="list chapters and their exercises")
    c.set_defaults(func=cmd_chapters)

    args = parser.parse_args(argv)
    return args.func(args)
