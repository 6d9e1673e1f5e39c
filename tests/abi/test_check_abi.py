#!/usr/bin/env python3
"""The ABI gate's own rule, on edited copies of the real baseline.

  test_check_abi.py BASELINE

Each case edits abi/libtether.abi the way a change to the library would
(remove a function, reorder struct members, change a parameter, append a
member, add a function, bump the SONAME) and checks that check_abi.py's
rule calls it a break, growth or nothing, and that a baseline regenerated
over a break, or without the CHANGELOG line, is refused.
"""

import os
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_abi  # noqa: E402

BASELINE = None


def edited(edit):
    """The baseline's text after `edit(root)`."""
    root = ET.fromstring(BASELINE)
    edit(root)
    return ET.tostring(root, encoding="unicode")


def struct(root, name):
    return next(c for c in root.iter("class-decl") if c.get("name") == name)


def function(root, name):
    return next(f for f in root.iter("function-decl")
                if f.get("name") == name)


def remove_function(root, name):
    for parent in root.iter():
        for child in list(parent):
            if child.get("name") == name and child.tag in ("elf-symbol",
                                                          "function-decl"):
                parent.remove(child)


def add_symbol(root, name):
    syms = root.find("elf-function-symbols")
    ET.SubElement(syms, "elf-symbol", name=name, version="TETHER_1.1")


def compare(new_text):
    return check_abi.compare(check_abi.Corpus(BASELINE),
                             check_abi.Corpus(new_text))


class RuleTest(unittest.TestCase):
    def test_unchanged_is_nothing(self):
        self.assertEqual(compare(BASELINE), ([], []))

    def test_removed_function_is_a_break(self):
        breaks, _ = compare(edited(
            lambda r: remove_function(r, "tether_sleep")))
        self.assertIn("tether_sleep was removed", breaks)

    def test_reordered_members_are_a_break(self):
        def swap(root):
            opts = struct(root, "tether_thread_opts")
            members = opts.findall("data-member")
            a, b = members[2], members[3]
            a_off, b_off = (a.get("layout-offset-in-bits"),
                            b.get("layout-offset-in-bits"))
            a.set("layout-offset-in-bits", b_off)
            b.set("layout-offset-in-bits", a_off)
            opts.remove(a)
            opts.append(a)
        breaks, _ = compare(edited(swap))
        self.assertTrue(any("tether_thread_opts changed layout" in b
                            for b in breaks), breaks)

    def test_changed_parameter_is_a_break(self):
        def retype(root):
            params = function(root, "tether_sleep").findall("parameter")
            ret = function(root, "tether_sleep").find("return")
            params[0].set("type-id", ret.get("type-id"))     # int64_t -> int
        breaks, _ = compare(edited(retype))
        self.assertTrue(any(b.startswith("tether_sleep changed type")
                            for b in breaks), breaks)

    def test_member_appended_to_a_sized_struct_is_growth(self):
        def grow(root):
            stats = struct(root, "tether_gil_stats")
            last = stats.findall("data-member")[-1]
            new = ET.fromstring(ET.tostring(last))
            new.find("var-decl").set("name", "appended")
            off = int(last.get("layout-offset-in-bits")) + 64
            new.set("layout-offset-in-bits", str(off))
            stats.append(new)
            stats.set("size-in-bits", str(off + 64))
        breaks, growth = compare(edited(grow))
        self.assertEqual(breaks, [])
        self.assertTrue(any("tether_gil_stats grew at its end: appended" in g
                            for g in growth), growth)

    def _retype_function_type(self, pick):
        """Points the first parameter of a function type that takes a
        typedef at the type `pick(root, typedef)` returns."""
        def edit(root):
            types = {e.get("id"): e for e in root.iter() if e.get("id")}
            for ft in root.iter("function-type"):
                p = ft.find("parameter")
                td = types.get(p.get("type-id")) if p is not None else None
                if td is not None and td.tag == "typedef-decl":
                    p.set("type-id", pick(root, td))
                    return
            self.fail("no function type takes a typedef")
        return compare(edited(edit))

    def test_function_type_naming_a_same_typedef_is_nothing(self):
        # abidw keeps one function type for int (tether_lock) and
        # int (tether_tstate); which name it shows can change between dumps.
        def same(root, td):
            return next(t.get("id") for t in root.iter("typedef-decl")
                        if t.get("type-id") == td.get("type-id")
                        and t.get("id") != td.get("id"))
        self.assertEqual(self._retype_function_type(same), ([], []))

    def test_function_type_with_another_parameter_type_is_a_break(self):
        def other(root, td):
            return function(root, "tether_sleep").find("return").get("type-id")
        breaks, _ = self._retype_function_type(other)
        self.assertTrue(any(b.startswith("the type") for b in breaks), breaks)

    def test_added_function_is_growth(self):
        breaks, growth = compare(edited(
            lambda r: add_symbol(r, "tether_new_thing")))
        self.assertEqual(breaks, [])
        self.assertIn("tether_new_thing was added (version TETHER_1.1)",
                      growth)

    def test_new_soname_allows_anything(self):
        def bump(root):
            root.set("soname", "libtether.so.2")
            remove_function(root, "tether_sleep")
        breaks, growth = compare(edited(bump))
        self.assertEqual(breaks, [])
        self.assertIn("a new major version", growth[0])


class HistoryTest(unittest.TestCase):
    """A regenerated baseline: the CHANGELOG line and no laundered break."""

    def history(self, new_text, touched, changelog):
        return check_abi.history_problems(BASELINE, new_text, touched,
                                          changelog, "the working tree")

    def test_regenerated_over_a_break_is_refused(self):
        problems = self.history(edited(
            lambda r: remove_function(r, "tether_sleep")), True,
            "- Removed tether_sleep")
        self.assertTrue(any("regenerated over an incompatible change" in p
                            for p in problems), problems)

    def test_growth_needs_a_changelog_line_naming_it(self):
        new = edited(lambda r: add_symbol(r, "tether_new_thing"))
        self.assertTrue(any("without a CHANGELOG.md line" in p
                            for p in self.history(new, False, "")))
        self.assertTrue(any("do not name it" in p for p in self.history(
            new, True, "- Something else")))
        self.assertEqual(self.history(
            new, True, "- `tether_new_thing` makes new things."), [])

    def test_first_baseline_needs_only_the_changelog(self):
        self.assertEqual(check_abi.history_problems(
            None, BASELINE, True, "", "the working tree"), [])


if __name__ == "__main__":
    with open(sys.argv.pop(1)) as fh:
        BASELINE = fh.read()
    unittest.main(verbosity=2)
