"""MkDocs hook: measured numbers from bench/results/, and GitHub's `\\|` escape inside table code spans.

- Every `{{ bench ... }}` placeholder of a page is replaced by the number it names in a
  benchmark file, and the page ends with the machine and date of each file it read
  (`scripts/docs_numbers.py`; docs/benchmarks.md, "Numbers in the docs"). A placeholder
  naming a missing file or key raises, so `mkdocs build` fails instead of printing a blank.
- GitHub needs `\\|` for a pipe inside a code span in a table cell; Python-Markdown's
  tables extension already ignores pipes inside backticks but would print the
  backslash. The docs' Markdown stays GitHub-compatible and the site shows `|`.
"""

import re

from mkdocs.exceptions import PluginError

from scripts.docs_numbers import MissingNumber, render_page

_CODE_SPAN = re.compile(r"`[^`\n]*`")


def on_page_markdown(markdown, page, **kwargs):
    try:
        markdown = render_page(markdown)
    except MissingNumber as error:
        raise PluginError(f"docs/{page.file.src_path}: {error}") from None
    lines = []
    for line in markdown.split("\n"):
        if line.lstrip().startswith("|"):
            line = _CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line)
        lines.append(line)
    return "\n".join(lines)
