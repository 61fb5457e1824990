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


def cmd_grade_one(args) -> int:
    from grader.grade import grade_one_to_json

    print(grade_one_to_json(args.path, args.cell_timeout, args.fast))
    return 0


def cmd_release(args) -> int:
    from grader.assign import check_release, release

    if args.check:
        problems = check_release(args.chapters or None)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("chapters/ is not what `make release` generates from solutions/: run "
                  "`make release` and commit the result.", file=sys.stderr)
            return 1
        print("chapters/ is up to date with solutions/")
        return 0
    for path in release(args.chapters or None):
        print(f"wrote {path}")
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
    one.add_argument("--cell-timeout", type=int, default=120)
    one.add_argument("--no-fast", dest="fast", action="store_false")
    one.set_defaults(func=cmd_grade_one)

    r = sub.add_parser("release", help="generate chapters/ from solutions/ with nbgrader")
    r.add_argument("chapters", nargs="*", help="chapter ids (default: all)")
    r.add_argument("--check", action="store_true",
                   help="only check that chapters/ is what would be generated")
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
