"""The README and docs/: every relative link resolves to a file of the repository (and to a
heading, for a link with an #anchor), and the README stays a two-minute read."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), not inside code spans or fenced blocks.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def links(page):
    text = CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def anchors(page):
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", h.lower())) for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert links(page) or page.name != "README.md"
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_file():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading, here\n")
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading-here) [bad](gone.md) [bad](there.md#nope) "
        "`[code](skipped.md)` [web](https://example.com)\n"
    )
    assert links(page) == ["there.md", "there.md#a-heading-here", "gone.md", "there.md#nope"]
    assert anchors(tmp_path / "there.md") == {"a-heading-here"}


def test_readme_is_short_and_has_its_sections():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    assert text.startswith("```\nmake demo") and "make test" in text.split("\n# ")[0]
    for heading in (
        "## Install",
        "## The demo: `make demo`",
        "## Train on your own data",
        "## Read your results",
        "## Predict and deploy",
        "## CLI cheat-sheet",
        "## Python API",
        "## Results",
    ):
        assert f"\n{heading}\n" in text, heading
    assert "pip install -e ." in text


def test_configuration_reference_lists_every_key():
    """docs/configuration.md has a row for every key of every config section: `section.key`
    (or `section.key.sub`), or `key` in a row of another key of the same section."""
    import dataclasses

    from tf_frcnn.config import load_config

    rows = [
        line
        for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    ]
    config = load_config(ROOT / "configs" / "smoke.yaml")
    missing = []
    for section in dataclasses.fields(config):
        part = getattr(config, section.name)
        if not dataclasses.is_dataclass(part):
            continue
        for field in dataclasses.fields(part):
            mine = [row for row in rows if row.startswith(f"| `{section.name}.")]
            names = (f"`{field.name}`", f".{field.name}`", f".{field.name}.")
            if not any(name in row for row in mine for name in names):
                missing.append(f"{section.name}.{field.name}")
    assert not missing, f"docs/configuration.md lacks {missing}"
