"""Regenerate docs/cli.md from the command: ``python docs/gen_cli.py``."""

import pathlib

from trioserve._cli import cli_markdown

target = pathlib.Path(__file__).with_name("cli.md")
target.write_text(cli_markdown())
print(f"wrote {target}")
