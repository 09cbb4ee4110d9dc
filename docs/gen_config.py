"""Regenerate docs/config.md from the Config field table: ``python docs/gen_config.py``."""

import pathlib

from trioserve._config_sources import reference_markdown

target = pathlib.Path(__file__).with_name("config.md")
target.write_text(reference_markdown())
print(f"wrote {target}")
