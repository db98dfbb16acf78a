""" Keeps the hook reference (docs/hooks/) honest: one page and one index line per hookspec of
zato.hookspecs and none for a hook that does not exist, each page's signature the spec's own, and
every example ("From `PATH`:" and a python block) still, word for word, in the file it names. """

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest

from zato import hookspecs

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "docs" / "hooks"
INDEX = PAGES / "README.md"
GUIDE = ROOT / "docs" / "plugins.md"
SPEC_MARK = f"{hookspecs.hookspec.project_name}_spec"  # the attribute pluggy's HookspecMarker sets
HOOKS = sorted(name for name, value in vars(hookspecs).items() if inspect.isfunction(value) and hasattr(value, SPEC_MARK))

# Where an example may come from: plugins, the core's built-ins, test plugins; never the docs themselves
EXAMPLE_ROOTS = ("plugins/", "core/zato/", "tests/")
FROM_LINE = re.compile(r"^From `([^`]+)`:$", re.MULTILINE)
EXAMPLE = re.compile(r"^From `([^`]+)`:\n\n```python\n(.*?)\n```$", re.MULTILINE | re.DOTALL)
SIGNATURE = re.compile(r"^## Signature\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL)


def page_of(hook: str) -> str:
    return (PAGES / f"{hook}.md").read_text("utf-8")


def examples(text: str) -> list[tuple[str, str]]:
    """ The (path, code) of every "From `PATH`:" example of a page; a "From" line not followed
    by a python block fails, so that no example escapes the check. """
    found = EXAMPLE.findall(text)
    assert len(found) == len(FROM_LINE.findall(text)), \
        "every 'From `PATH`:' line must be followed by a blank line and a ```python block"
    return found


def occurs_in(block: str, text: str) -> bool:
    """ Whether `block` is a run of consecutive lines of `text`, modulo trailing whitespace and a
    common indentation (an example cut from a method or a source string). """
    want = [line.rstrip() for line in textwrap.dedent(block).strip("\n").splitlines()]
    have = [line.rstrip() for line in text.splitlines()]
    if not want:
        return False
    first = want[0]
    first_indent = len(first) - len(first.lstrip())
    for start, line in enumerate(have[:len(have) - len(want) + 1]):
        if line.lstrip() != first.lstrip():
            continue
        indent = line[:len(line) - len(line.lstrip())]
        if len(indent) < first_indent:
            continue
        prefix = indent[:len(indent) - first_indent]
        if all((not wanted and not have[start + offset].strip()) or (wanted and have[start + offset] == prefix + wanted)
               for offset, wanted in enumerate(want)):
            return True
    return False


def test_hooks_are_found():
    assert len(HOOKS) > 10 and "register_channel_types" in HOOKS and "shutdown" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_page(hook):
    assert (PAGES / f"{hook}.md").is_file(), f"docs/hooks/{hook}.md is missing"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_the_index(hook):
    rows = [line for line in INDEX.read_text("utf-8").splitlines() if line.startswith(f"| [`{hook}`]({hook}.md) |")]
    assert len(rows) == 1, f"docs/hooks/README.md needs one table row '| [`{hook}`]({hook}.md) | phase | purpose |'"
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert len(cells) == 3 and all(cells), f"the index row of {hook} needs a phase and a line on what it is for"


def test_no_page_and_no_index_entry_for_a_hook_that_does_not_exist():
    pages = {path.stem for path in PAGES.glob("*.md") if path.name != "README.md"}
    assert pages <= set(HOOKS), f"pages for hooks that do not exist: {sorted(pages - set(HOOKS))}"
    linked = set(re.findall(r"\]\(([A-Za-z0-9_]+)\.md(?:#[^)]*)?\)", INDEX.read_text("utf-8")))
    assert linked <= set(HOOKS), f"the index links hooks that do not exist: {sorted(linked - set(HOOKS))}"


@pytest.mark.parametrize("hook", HOOKS)
def test_page_signature_is_the_specs(hook):
    text = page_of(hook)
    section = SIGNATURE.search(text)
    assert section, f"docs/hooks/{hook}.md needs a '## Signature' section"
    blocks = re.findall(r"```python\n(.*?)\n```", section.group(1), re.DOTALL)
    assert len(blocks) == 1, f"the signature of {hook} is one python block"
    spec = getattr(hookspecs, hook)
    defs = [line for line in blocks[0].splitlines() if line.startswith("def ")]
    assert defs == [f"def {hook}{inspect.signature(spec)}:"], f"docs/hooks/{hook}.md: the signature is not the spec's"
    source = Path(inspect.getsourcefile(hookspecs)).read_text("utf-8")
    assert occurs_in(blocks[0], source), f"docs/hooks/{hook}.md: the signature block is not as in hookspecs.py"
    if getattr(spec, SPEC_MARK).get("firstresult"):
        assert "firstresult=True" in blocks[0], f"docs/hooks/{hook}.md: the spec is firstresult"


@pytest.mark.parametrize("hook", HOOKS)
def test_page_links_back_to_its_section_of_plugins_md(hook):
    assert f"](../plugins.md#{hook})" in page_of(hook), f"docs/hooks/{hook}.md must link ../plugins.md#{hook}"
    assert re.search(rf"^### `{hook}`$", GUIDE.read_text("utf-8"), re.MULTILINE), f"docs/plugins.md has no {hook} section"


@pytest.mark.parametrize("hook", HOOKS)
def test_page_examples_are_verbatim_in_the_files_they_name(hook):
    found = [(path, code) for path, code in examples(page_of(hook)) if path != "core/zato/hookspecs.py"]
    assert found, f"docs/hooks/{hook}.md needs an example: 'From `PATH`:' and a python block"
    assert any(re.search(rf"\bdef {hook}\(", code) for _, code in found), \
        f"docs/hooks/{hook}.md: no example implements {hook}"
    for path, code in found:
        assert path.startswith(EXAMPLE_ROOTS), f"docs/hooks/{hook}.md: {path} is not a plugin, the core or a test"
        source = ROOT / path
        assert source.is_file(), f"docs/hooks/{hook}.md: {path} does not exist"
        assert occurs_in(code, source.read_text("utf-8")), \
            f"docs/hooks/{hook}.md: an example is no longer in {path} as it is quoted:\n{code}"


def test_occurs_in_is_strict():
    text = "class A:\n    def f(self):\n        return 1\n\n    def g(self):\n        return 2\n"
    assert occurs_in("def f(self):\n    return 1", text)
    assert occurs_in("def f(self):  \n    return 1\n", text)
    assert not occurs_in("def f(self):\n    return 2", text)
    assert not occurs_in("def f(self):\nreturn 1", text)
    assert not occurs_in("def g(self):\n    return 2\n    more()", text)
