"""Pointers to documentation lead somewhere: every Markdown path under docs that the project's
files name exists, and every "README: Section" pointer in an error message names a README heading."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", ".venv", "runs", "build", "__pycache__", ".mypy_cache", ".ruff_cache",
                ".pytest_cache"}
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".toml", ".conf", ".cfg", ".sh", ".txt"}
TEXT_NAMES = {"Makefile", "Dockerfile", ".dockerignore"}
DOCS_PATH = re.compile(r"\bdocs/[\w./-]+\.md\b")
README_SECTION = re.compile(r"README: ([A-Z][\w` -]*?)\)")


def _project_files() -> list[Path]:
    return [path for path in ROOT.rglob("*")
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
            and (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES)]


def _mentions(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    found = []
    for path in _project_files():
        for match in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
            found.append((str(path.relative_to(ROOT)), match.group(match.lastindex or 0)))
    return found


def test_every_docs_path_named_in_the_project_exists() -> None:
    # Given every text file of the project (sources, compose file, Dockerfile, Markdown)
    # When we collect the Markdown paths under docs that they name
    named = _mentions(DOCS_PATH)
    # Then each one is a file in the repository
    missing = [(where, target) for where, target in named if not (ROOT / target).is_file()]
    assert missing == [], f"pointers to missing docs (file, target): {missing}"


def test_every_readme_section_named_in_an_error_exists() -> None:
    # Given the README's headings
    headings = {line.lstrip("#").strip() for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("#")}
    # When we collect the "README: Section" pointers in the project's files
    named = _mentions(README_SECTION)
    # Then there is at least one (the allowlist errors), and each names an existing heading
    assert named, "expected the allowlist errors to point to the README"
    missing = [(where, section) for where, section in named if section not in headings]
    assert missing == [], f"pointers to missing README sections (file, section): {missing}"
