"""The docs that are generated from code, and the examples the docs point at."""

from __future__ import annotations

import pathlib
import runpy

from trioserve._config import reference_markdown
from trioserve.testing import open_test_client

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_config_reference_is_up_to_date() -> None:
    # A key added to Config without regenerating docs/config.md fails here.
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == reference_markdown(), (
        "docs/config.md is stale: run `python docs/gen_config.py`"
    )


async def test_hello_example_serves_its_greeting() -> None:
    namespace = runpy.run_path(str(ROOT / "examples" / "hello.py"))
    async with open_test_client(namespace["app"]) as client:
        response = await client.get("/")
    assert response.status == 200
    assert response.body == b"Hello from trioserve!\n"
    assert response.header("content-length") == "22"
