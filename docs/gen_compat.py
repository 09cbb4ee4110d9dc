"""Regenerate docs/compatibility.md from the flag table: ``python docs/gen_compat.py``."""

import pathlib

from trioserve._compat import compatibility_markdown

target = pathlib.Path(__file__).with_name("compatibility.md")
target.write_text(compatibility_markdown())
print(f"wrote {target}")
