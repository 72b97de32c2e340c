"""MkDocs hook: let table cells keep GitHub's `\\|` escape inside code spans.

GitHub needs `\\|` for a pipe inside a code span in a table cell; Python-Markdown's
tables extension already ignores pipes inside backticks but would print the
backslash. The docs' Markdown stays GitHub-compatible and the site shows `|`.
"""

import re

_CODE_SPAN = re.compile(r"`[^`\n]*`")


def on_page_markdown(markdown, **kwargs):
    lines = []
    for line in markdown.split("\n"):
        if line.lstrip().startswith("|"):
            line = _CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line)
        lines.append(line)
    return "\n".join(lines)
