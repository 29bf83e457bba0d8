"""How the matching margins were chosen: coverage and wrong-person segments per variant.

Runs ``facereel eval``'s evaluation (pipelines/eval_runner.py) on a labelled set for a grid
of MatchSettings variants, reusing one index, and prints a table. The chosen defaults are
the simplest variant with 0 wrong-person segments (labelled people and no-match queries
alike) and the highest coverage; neighbours of the chosen values show how sensitive the
result is.

    .venv/bin/python bench/tune_matching.py [../shared/data/faces]
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from app.config import load_app_settings
from pipelines.eval_runner import run_evaluation
from pipelines.evaluate import overall


def variants(base):
    grid = {
        "per-face (baseline)": {"mode": "faces"},
        "tracks only": {"expansion": False, "competitors": False},
        "tracks + competitors": {"expansion": False},
        "tracks + expansion, no competitors": {"competitors": False},
        "chosen: tracks + expansion + competitors": {},
    }
    neighbours = {  # one step either way from each chosen value
        "expansion_margin": (0.05, 0.15),
        "expansion_floor": (0.20, 0.30),
        "candidate_floor": (0.20, 0.30),
        "best_k": (1, 5),
        "competitor_min_quality": (0.3, 0.7),
        "competitor_max_similarity": (0.2, 0.3),
    }
    for name, values in neighbours.items():
        grid.update({f"{name} {value}": {name: value} for value in values})
    return {name: base.model_copy(update=update) for name, update in grid.items()}


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/faces")
    settings = load_app_settings(None, data_dir=".facereel-eval")
    report = run_evaluation(settings, root, variants(settings.match))
    print(f"{'variant':42} {'coverage':>9} {'wrong (labelled)':>17} {'wrong (strangers)':>18}")
    for name, scores in report.scores.items():
        labelled = [s for s in scores if s.labelled_s > 0]
        strangers = sum(s.segments for s in scores if s.labelled_s == 0)
        total = overall(labelled)
        print(f"{name:42} {total.coverage:9.1%} {total.wrong_segments:17d} {strangers:18d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
