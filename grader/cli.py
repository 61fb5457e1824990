"""Command line: `python -m grader {grade,release,chapters}`."""

from __future__ import annotations

import argparse
import json
import os
import sys


def cmd_grade(argv) -> int:
    from grader.batch import main as batch_main

    return batch_main(argv)


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

    return bench(args.chapters or None, args.repeat, batch=args.batch, sandbox=args.sandbox,
                 jobs_list=tuple(int(j) for j in args.jobs.split(",")))


def cmd_chapters(args) -> int:
    from grader.registry import chapter_ids, get_chapter

    for cid in chapter_ids():
        ch = get_chapter(cid)
        print(f"{cid}: {ch.title} ({len(ch.exercises)} exercises, {ch.max_score:g} points)")
        for ex in ch.exercises.values():
            print(f"    {ex.name} ({ex.points:g})")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grade"]:  # its options are grader.batch's
        return cmd_grade(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade submitted notebooks (files or directories); "
                       "`python -m grader grade --help` lists the options", add_help=False)
    g.add_argument("rest", nargs=argparse.REMAINDER)
    g.set_defaults(func=lambda a: cmd_grade(a.rest))

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
    b.add_argument("--batch", type=int, default=0, metavar="N",
                   help="grade a class of N submissions (1 in 10 faulty) with -j 1, -j 2 and "
                        "nbgrader autograde")
    b.add_argument("--no-sandbox", dest="sandbox", action="store_false")
    b.add_argument("--jobs", default="1,2", help="with --batch: the -j values to time (1,2)")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("chapters", help="list chapters and their exercises")
    c.set_defaults(func=cmd_chapters)

    args = parser.parse_args(argv)
    return args.func(args)
