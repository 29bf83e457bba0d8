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

A module counts as touched when it or one of its unit test files changed. The exit status is 1
when a module scores under ``threshold`` (killed + timeouts over the mutants tested).
"""

from __future__ import annotations

import argparse
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


def run_module(module: str, tests: list[str], max_children: int, verbose: bool, resume: bool = False) -> Score:
    # mutmut picks up where an interrupted run stopped, in the same scratch copy.
    work = workdir(module) if resume and workdir(module).exists() else prepare(module, tests)
    started = time.monotonic()
    # Workers inherit the niceness: mutation runs never take CPUs from anything else.
    cmd = ["nice", "-n", "19", mutmut(), "run", "--max-children", str(max_children)]
    proc = subprocess.run(cmd, cwd=work, capture_output=not verbose, text=True, check=False)
    seconds = time.monotonic() - started
    meta = work / "mutants" / f"{module}.meta"
    if not meta.exists():
        if not verbose:
            sys.stdout.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{module}: mutmut produced no results (exit {proc.returncode})")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    killed = sum(1 for c in codes.values() if c in KILLED)
    survived = sorted(k for k, c in codes.items() if c in SURVIVED)
    other = {k: c for k, c in codes.items() if c not in KILLED and c not in SURVIVED}
    return Score(module, killed, survived, other, seconds)


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


def changed_modules(base: str, modules: dict[str, list[str]]) -> list[str]:
    """Modules touched since ``base`` (committed, staged or not): the module or one of its tests."""
    names = set()
    for args in (["git", "diff", "--name-only", f"{base}...HEAD"], ["git", "diff", "--name-only", "HEAD"]):
        out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True).stdout
        names.update(out.split())
    return [m for m, tests in modules.items() if m in names or any(t.split("::")[0] in names for t in tests)]


def main() -> int:
    cfg = load_config()["tool"]["facereel"]["mutation"]
    modules: dict[str, list[str]] = cfg["modules"]
    deferred: list[str] = cfg.get("deferred", [])
    equivalent: list[dict] = cfg.get("equivalent", [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: every listed one but the deferred)")
    parser.add_argument("--changed", metavar="BASE", help="only the modules touched since BASE (git diff BASE...)")
    parser.add_argument("--threshold", type=float, default=cfg["threshold"])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--resume", action="store_true", help="go on with an interrupted run (same sources)")
    parser.add_argument("--no-diffs", action="store_true", help="list survivors by name only")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("-v", "--verbose", action="store_true", help="show mutmut's own output")
    args = parser.parse_args()

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
        print(f"== {module} (tests: {' '.join(modules[module])})", flush=True)
        score = run_module(module, modules[module], args.max_children, args.verbose, args.resume)
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
    low = [s for s in scores if s.percent < args.threshold]
    if low:
        print(f"\nFAIL: under {args.threshold:g} %: " + ", ".join(f"{s.module} {s.percent:.1f} %" for s in low))
        return 1
    print(f"\nOK: every module at or above {args.threshold:g} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
