"""What CI's mutation step mutates for a change (bench/mutation.py --changed): the functions
and methods whose lines changed, named as mutmut names their mutants."""

from __future__ import annotations

from bench.mutation import HUNK, mutant_patterns

SOURCE = '''\
import math


def first(x):
    return x + 1


class Leases:
    @property
    def size(self):
        return 2

    def take(self, n):
        return n - 1


def last(x):
    return math.floor(x)
'''


def test_a_changed_line_selects_the_function_or_method_that_holds_it():
    assert mutant_patterns("pkg/mod.py", SOURCE, {5}) == ["pkg.mod.x_first__mutmut_*"]
    assert mutant_patterns("pkg/mod.py", SOURCE, {14, 18}) == [
        "pkg.mod.x\u01c1Leases\u01c1take__mutmut_*",
        "pkg.mod.x_last__mutmut_*",
    ]


def test_a_decorator_line_belongs_to_its_method_and_lines_outside_functions_select_nothing():
    assert mutant_patterns("pkg/mod.py", SOURCE, {9}) == ["pkg.mod.x\u01c1Leases\u01c1size__mutmut_*"]
    assert mutant_patterns("pkg/mod.py", SOURCE, {1, 2, 8}) == []


def test_hunk_headers_give_the_new_files_lines():
    diff = "@@ -3 +3 @@ x\n@@ -10,0 +11,2 @@ y\n@@ -20,4 +22,0 @@ z\n"
    assert HUNK.findall(diff) == [("3", ""), ("11", "2"), ("22", "0")]
