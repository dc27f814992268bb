"""The README and the docs site: every README link resolves, the settings page is the one SETTINGS generates,
every page is in the nav, and the site builds offline in CI. Pure file checks: `make docs` (mkdocs strict)
catches the links and anchors inside docs/, these what it cannot see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docs import settings_table

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
MKDOCS = REPO / "mkdocs.yml"
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")


def prose(markdown: str) -> str:
    """``markdown`` without code blocks and code spans, where a bracket is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """The anchor GitHub (and mkdocs' toc, for the headings here) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+?)\s*$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M)
    return {slug(heading) for heading in headings}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...: not ours to check offline
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    return broken


def test_every_readme_link_resolves() -> None:
    assert broken_links(README) == []


def test_the_link_check_sees_a_broken_file_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A `code` heading: yes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-code-heading-yes) [self](#page) [web](https://example.com/x.md)\n"
        "`[not a link](gone.md)`\n```\n[nor this](gone.md)\n```\n"
        "[gone](gone.md) [bad anchor](other.md#nope) [bad self](#nope)\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file",
        "other.md#nope: no heading with that anchor in other.md",
        "#nope: no heading with that anchor in page.md",
    ]


def test_the_readme_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference material to a page in docs/"


def test_the_settings_page_is_the_one_settings_generates() -> None:
    page = settings_table.PAGE.read_text(encoding="utf-8")
    wanted = settings_table.render(page, settings_table.current_table())
    assert page == wanted, (
        f"docs/settings.md's table disagrees with SETTINGS in shared/settings/: run `{settings_table.FIX}`"
    )


def test_the_settings_table_has_a_row_per_setting_with_its_sample_value() -> None:
    generated = settings_table.table(
        {"PLAIN": "A <placeholder> with a | bar and `<code>` kept.", "UNSET": "Nothing sampled."},
        {"PLAIN": "x|y"},
    )
    assert generated.splitlines() == [
        "| setting | sample value | meaning |",
        "|---|---|---|",
        r"| `PLAIN` | `x\|y` | A &lt;placeholder> with a \| bar and `<code>` kept. |",
        "| `UNSET` | — | Nothing sampled. |",
    ]


def test_a_settings_page_without_its_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks the markers"):
        settings_table.render("# Settings\n\nno table here\n", "| a |")


def test_the_settings_check_fails_with_the_fix_and_the_write_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "docs" / "settings.md"
    page.parent.mkdir()
    stale = f"# Settings\n\n{settings_table.START}\n| setting | sample value | meaning |\n{settings_table.END}\n"
    page.write_text(stale)
    monkeypatch.setattr(settings_table, "REPO", tmp_path)
    monkeypatch.setattr(settings_table, "PAGE", page)

    assert settings_table.main(["--check"]) == 1
    assert f"run `{settings_table.FIX}`" in capsys.readouterr().err
    assert page.read_text() == stale
    assert settings_table.main([]) == 0
    assert settings_table.main(["--check"]) == 0
    assert "| `AZURE_OPENAI_ENDPOINT` |" in page.read_text()


def nav_pages() -> list[str]:
    return re.findall(r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)\s*$", MKDOCS.read_text(encoding="utf-8"), re.M)


def test_every_docs_page_is_in_the_nav_once_and_every_entry_exists() -> None:
    listed = nav_pages()
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(listed) == pages, "list each page of docs/ in mkdocs.yml's nav, under its section, once"


def test_the_site_builds_strict_and_offline() -> None:
    lines = MKDOCS.read_text(encoding="utf-8").splitlines()
    config = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert re.search(r"^strict: true$", config, re.M)
    assert re.search(r"^  font: false$", config, re.M), "theme fonts come from Google Fonts at view time"
    for plugin in ("social", "privacy", "optimize", "git-revision-date", "import:"):
        assert plugin not in config, f"{plugin} fetches from the network at build time"


def test_ci_builds_the_docs_and_runs_the_test_command_the_readme_gives() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "make docs" in ci and ci.index("make docs") > ci.index("make lint typecheck")
    (test_command,) = [line for line in ci if line.startswith("make test ")]
    assert f"`{test_command}`" in README.read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "docs: $(DOCS_STAMP)" in makefile and "-r requirements-docs.txt" in makefile


def test_the_docs_tools_are_pinned_without_disagreeing_with_the_other_pins() -> None:
    def pins(name: str) -> dict[str, str]:
        found = {}
        for line in (REPO / name).read_text().splitlines():
            if match := re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line):
                found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
        return found

    lines = [line for line in (REPO / "requirements-docs.txt").read_text().splitlines() if line.strip()]
    docs = pins("requirements-docs.txt")
    assert len(docs) == len([line for line in lines if not line.startswith("#")]), "every line pins one version"
    assert {"mkdocs": "1.6.1", "mkdocs-material": "9.8.2", "mkdocstrings-python": "2.0.11"}.items() <= docs.items()
    for other in ("requirements.txt", "requirements-dev.txt"):
        assert docs.keys().isdisjoint(pins(other)), f"pinned in {other} already: leave it there"
