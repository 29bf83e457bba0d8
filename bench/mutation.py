"""Mutation testing of the pure cores (mutmut 3): the score per module and its surviving mutants.

Each module listed in pyproject's ``[tool.facereel.mutation.modules]`` is mutated against its
own unit tests only (never the Ray suite), in a scratch copy of the tree under
``.mutation/<module>/`` whose ``[tool.mutmut]`` names that module and those tests (the rest of
``[tool.mutmut]`` is kept). Equivalent mutants (no test can tell them from the code) are listed
in ``[[tool.facereel.mutation.equivalent]]`` by mutmut's name and the line they write, with the
reason; a listed survivor is reported and not counted. A changed function renumbers its
mutants: an entry whose line no longer matches counts as a survivor again.

    .venv/bin/python bench/mutation.py                       # every module (not the deferred ones)
    .venv/bin/python bench/mutation.py app/features/ratelimit.py      # one module
    .venv/bin/python bench/mutation.py --changed origin/main # what a change touched (CI)

A module counts as touched when it or one of its unit test files changed. With ``--changed``,
only what the change can have weakened is mutated: the functions and methods whose lines the
diff touched (every function of the module when only its tests changed), fastest mutants
first, for at most ``--budget-s`` seconds in all (the mutants left untested are counted as
such, not as killed). The exit status is 1 when a module scores under ``threshold`` (killed +
timeouts over the mutants tested).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / ".mutation"
COPIED = ("app", "pipelines", "tests")

# mutmut's exit codes per mutant (mutmut/stats.py): what counts as killed, and what is left out.
KILLED = {1, 3, 36, 24, -24, 152, 255}  # a failing test, pytest's internal error, a timeout
SURVIVED = {0}
NOT_TESTED = {34, 37, None}  # skipped, caught by the type check, not checked: left out
# Everything else (no test ran it: exit 5 or 33, suspicious, segfault) counts as not killed.


@dataclass
class Score:
    module: str
    killed: int
    survived: list[str]
    other: dict[str, int | None]  # mutants neither killed nor survived: their exit codes
    seconds: float
    equivalent: list[str] = field(default_factory=list)  # survivors listed as equivalent: not counted
    required: float = 0.0  # the score it must reach: the threshold, or its floor on a whole run
    cut_short: bool = False  # stopped by --budget-s before every mutant was tested

    @property
    def tested(self) -> int:
        return self.killed + len(self.survived) + sum(1 for c in self.other.values() if c not in NOT_TESTED)

    @property
    def percent(self) -> float:
        """0 when mutants exist and none was tested: the module's tests did not run (a
        missing test file once made a module read 100 % with 0 of 165 tested)."""
        if not self.tested:
            return 0.0 if self.other else 100.0
        return 100.0 * self.killed / self.tested


def load_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def module_config(pyproject: str, module: str, tests: list[str]) -> str:
    """pyproject.toml with ``[tool.mutmut]`` narrowed to one module and its tests."""
    section = re.search(r"^\[tool\.mutmut\]\n(.*?)(?=^\[)", pyproject, flags=re.S | re.M)
    assert section is not None, "pyproject.toml has no [tool.mutmut] section"
    body = section.group(1)
    body = re.sub(r"^only_mutate = \[.*?^\]\n", f"only_mutate = {json.dumps([module])}\n", body, flags=re.S | re.M)
    body = re.sub(
        r"^pytest_add_cli_args_test_selection = \[.*?^\]\n",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n",
        body,
        flags=re.S | re.M,
    )
    return pyproject[: section.start(1)] + body + pyproject[section.end(1) :]


def workdir(module: str) -> Path:
    return SCRATCH / module.replace("/", "_").removesuffix(".py")


def prepare(module: str, tests: list[str]) -> Path:
    work = workdir(module)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        shutil.copytree(REPO / name, work / name, ignore=ignore)
    (work / "pyproject.toml").write_text(module_config((REPO / "pyproject.toml").read_text(), module, tests))
    return work


def mutmut() -> str:
    local = Path(sys.executable).with_name("mutmut")
    return str(local) if local.exists() else "mutmut"


def run_module(
    module: str,
    tests: list[str],
    max_children: int,
    verbose: bool,
    resume: bool = False,
    names: list[str] | None = None,
    timeout_s: float | None = None,
) -> Score:
    """``names``: mutmut name patterns to run (default all); ``timeout_s``: stop there and score
    what was tested (mutmut records each result as it comes)."""
    # mutmut picks up where an interrupted run stopped, in the same scratch copy.
    work = workdir(module) if resume and workdir(module).exists() else prepare(module, tests)
    started = time.monotonic()
    # Workers inherit the niceness: mutation runs never take CPUs from anything else.
    cmd = ["nice", "-n", "19", mutmut(), "run", "--max-children", str(max_children), *(names or [])]
    proc = subprocess.Popen(
        cmd, cwd=work, stdout=None if verbose else subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # so a timeout stops its forked workers too
    )  # fmt: skip
    cut_short = False
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        cut_short = True
        print(f"   stopped after {timeout_s:.0f} s (--budget-s): untested mutants are not scored", flush=True)
    seconds = time.monotonic() - started
    meta = work / "mutants" / f"{module}.meta"
    if names and "nothing matches" in (output or ""):
        return Score(module, 0, [], {}, seconds)  # the changed functions have no mutants
    if not meta.exists():
        if not verbose:
            sys.stdout.write((output or "")[-8000:])
        raise SystemExit(f"{module}: mutmut produced no results (exit {proc.returncode})")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    if names:
        codes = {k: c for k, c in codes.items() if any(fnmatch.fnmatchcase(k, n) for n in names)}
    killed = sum(1 for c in codes.values() if c in KILLED)
    survived = sorted(k for k, c in codes.items() if c in SURVIVED)
    other = {k: c for k, c in codes.items() if c not in KILLED and c not in SURVIVED}
    return Score(module, killed, survived, other, seconds, cut_short=cut_short)


def survivor_diffs(module: str, names: list[str]) -> dict[str, str]:
    """The surviving mutants as diffs (mutmut's own rendering), in one process."""
    if not names:
        return {}
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        f"print(json.dumps({{n: get_diff_for_mutant(n, path={module!r}) for n in sys.argv[1:]}}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=workdir(module), capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def is_equivalent(name: str, diff: str, equivalent: list[dict]) -> dict | None:
    """The ``equivalent`` entry for this mutant when its name and the line it writes both match."""
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    for entry in equivalent:
        if entry["mutant"] == name and entry["line"].strip() in added:
            return entry
    return None


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def changed_files(base: str) -> set[str]:
    """Files that differ from ``base``, committed or not."""
    return set(git("diff", "--name-only", base).split())


def tests_touched(base: str, tests: list[str], files: set[str]) -> bool:
    """Whether a change since ``base`` touched any of a module's tests: a whole test file, or
    the named test functions (``file::test``) of a file it changed."""
    for test in tests:
        path, _, name = test.partition("::")
        if path not in files:
            continue
        if not name:
            return True
        source = (REPO / path).read_text()
        if any(
            p.endswith(f".x_{name.split('[')[0]}__mutmut_*")
            for p in mutant_patterns(path, source, changed_lines(base, path))
        ):
            return True
    return False


def changed_modules(base: str, modules: dict[str, list[str]]) -> list[str]:
    """Modules touched since ``base``: the module or one of its tests."""
    files = changed_files(base)
    return [m for m, tests in modules.items() if m in files or tests_touched(base, tests, files)]


HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", re.M)


def changed_lines(base: str, path: str) -> set[int]:
    """Lines of the working-tree ``path`` that differ from ``base``, committed or not (a
    deletion marks the line after it)."""
    lines: set[int] = set()
    for start, count in HUNK.findall(git("diff", "-U0", base, "--", path)):
        n = 1 if count == "" else int(count)
        lines.update(range(int(start), int(start) + max(n, 1)))
    return lines


def mutant_patterns(module: str, source: str, lines: set[int]) -> list[str]:
    """mutmut name patterns for the functions and methods (as mutmut names them) that hold any
    of ``lines``. Pure."""
    prefix = module.removesuffix(".py").replace("/", ".")
    patterns = []
    for node in ast.parse(source).body:
        inner = [(node, None)] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else []
        if isinstance(node, ast.ClassDef):
            inner = [(n, node.name) for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for fn, cls in inner:
            first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
            if lines & set(range(first, (fn.end_lineno or fn.lineno) + 1)):
                mangled = f"x\u01c1{cls}\u01c1{fn.name}" if cls else f"x_{fn.name}"
                patterns.append(f"{prefix}.{mangled}__mutmut_*")
    return patterns


def main() -> int:
    cfg = load_config()["tool"]["facereel"]["mutation"]
    modules: dict[str, list[str]] = cfg["modules"]
    deferred: list[str] = cfg.get("deferred", [])
    equivalent: list[dict] = cfg.get("equivalent", [])
    floors: dict[str, float] = cfg.get("floors", {})
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: every listed one but the deferred)")
    parser.add_argument("--changed", metavar="BASE", help="only the modules touched since BASE (git diff BASE...)")
    parser.add_argument("--threshold", type=float, default=cfg["threshold"])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--resume", action="store_true", help="go on with an interrupted run (same sources)")
    parser.add_argument("--no-diffs", action="store_true", help="list survivors by name only")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("-v", "--verbose", action="store_true", help="show mutmut's own output")
    parser.add_argument("--budget-s", type=float, help="stop mutating after this many seconds in all (CI)")
    args = parser.parse_args()
    deadline = None if args.budget_s is None else time.monotonic() + args.budget_s

    if args.changed:
        chosen = changed_modules(args.changed, modules)
        if not chosen:
            print(f"no pure core module touched since {args.changed}: nothing to mutate")
            return 0
    else:
        chosen = args.modules or [m for m in modules if m not in deferred]
    unknown = [m for m in chosen if m not in modules]
    if unknown:
        parser.error(f"not a listed pure core: {', '.join(unknown)}")

    scores = []
    for module in chosen:
        names = None
        if args.changed and not tests_touched(args.changed, modules[module], changed_files(args.changed)):
            # Only the module changed: its changed functions are what the change can have weakened.
            names = mutant_patterns(module, (REPO / module).read_text(), changed_lines(args.changed, module))
            if not names:
                print(f"== {module}: no function changed since {args.changed}: nothing to mutate")
                continue
        print(f"== {module} (tests: {' '.join(modules[module])})", flush=True)
        if names:
            print(f"   changed since {args.changed}: {', '.join(n.rsplit('.', 1)[1] for n in names)}", flush=True)
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        score = run_module(module, modules[module], args.max_children, args.verbose, args.resume, names, left)
        # A whole module tested to the end may not score under its last full run (its floor):
        # that is how a weakened test shows, even in a module far above the threshold.
        whole = names is None and not score.cut_short
        score.required = max(args.threshold, floors.get(module, 0.0) if whole else 0.0)
        found = survivor_diffs(module, score.survived)
        for name, diff in found.items():
            entry = is_equivalent(name, diff, equivalent)
            if entry is not None:
                score.survived.remove(name)
                score.equivalent.append(f"{name}: {entry['why']}")
        scores.append(score)
        print(
            f"   {score.percent:5.1f} %  killed {score.killed}/{score.tested}, "
            f"{len(score.survived)} survived, {len(score.equivalent)} equivalent (not counted), "
            f"{len(score.other)} other, {score.seconds:.0f} s",
            flush=True,
        )
        for line in score.equivalent:
            print(f"   equivalent: {line}")
        for name, code in sorted(score.other.items()):
            print(f"   not killed nor survived: {name} (exit {code})")
        for name in score.survived:
            print(f"\n# {name}: survived" + ("" if args.no_diffs else "\n" + found[name]))
        sys.stdout.flush()

    print("\nmodule                      score    killed/tested  seconds")
    for s in scores:
        print(f"{s.module:<27} {s.percent:5.1f} %  {s.killed:>6}/{s.tested:<6}  {s.seconds:7.0f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "module": s.module,
                        "killed": s.killed,
                        "tested": s.tested,
                        "percent": round(s.percent, 1),
                        "survived": s.survived,
                        "equivalent": s.equivalent,
                        "seconds": round(s.seconds, 1),
                    }
                    for s in scores
                ],
                indent=2,
            )
        )
    low = [s for s in scores if s.percent < s.required]
    if low:
        print("\nFAIL: " + ", ".join(f"{s.module} {s.percent:.1f} % (needs {s.required:g} %)" for s in low))
        return 1
    print("\nOK: every module at or above what it needs (" + ", ".join(f"{s.required:g} %" for s in scores) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
