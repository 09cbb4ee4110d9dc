"""The docs that are generated from code, and the examples the docs point at."""

from __future__ import annotations

import pathlib
import runpy
import warnings
from typing import Any

import pytest
import trio
import trio.testing

from trioserve import Config, ConfigWarning
from trioserve._cli import cli_markdown
from trioserve._config_sources import load_config, reference_markdown
from trioserve.testing import open_test_client

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_config_reference_is_up_to_date() -> None:
    # A key added to Config without regenerating docs/config.md fails here.
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == reference_markdown(), (
        "docs/config.md is stale: run `python docs/gen_config.py`"
    )


def test_cli_reference_is_up_to_date_and_reads_on_github() -> None:
    # A flag added or changed without regenerating docs/cli.md fails here; the page
    # is plain Markdown, with no directive that only the docs site would expand.
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == cli_markdown(), "docs/cli.md is stale: run `python docs/gen_cli.py`"
    assert ":::" not in committed
    assert "| `-w, --workers INTEGER` |" in committed


@pytest.mark.parametrize(
    ("page", "example"),
    [
        ("configuration.md", "examples/hypercorn.toml"),
        ("embedding.md", "examples/embed.py"),
        ("embedding.md", "examples/test_with_trioserve.py"),
    ],
)
def test_example_files_shown_in_the_docs_are_the_files_that_are_tested(
    page: str, example: str
) -> None:
    # The pages show the examples inline, so that they read on GitHub; the files
    # are what the tests run, and the two must not drift apart.
    text = (ROOT / "docs" / page).read_text()
    assert "```\n" + (ROOT / "docs" / example).read_text().rstrip("\n") + "\n```" in text.replace(
        "```toml\n", "```\n"
    ).replace("```python\n", "```\n")
    assert "--8<--" not in text


async def test_hello_example_serves_its_greeting() -> None:
    namespace = runpy.run_path(str(ROOT / "examples" / "hello.py"))
    async with open_test_client(namespace["app"]) as client:
        response = await client.get("/")
    assert response.status == 200
    assert response.body == b"Hello from trioserve!\n"
    assert response.header("content-length") == "22"


async def test_embedding_example_serves_and_stops() -> None:
    # docs/embedding.md includes this file: it must really work.
    namespace = runpy.run_path(str(ROOT / "docs" / "examples" / "embed.py"))
    with trio.fail_after(10):
        assert await namespace["main"]() == "embedded"


def test_testing_example_passes_in_virtual_time() -> None:
    namespace: dict[str, Any] = runpy.run_path(
        str(ROOT / "docs" / "examples" / "test_with_trioserve.py")
    )
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(namespace["test_slow_endpoint"], clock, clock=clock)
    assert clock.current_time() >= 3  # the app's 3 s sleep passed in virtual time


def test_hypercorn_toml_example_loads_with_one_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(str(ROOT / "docs" / "examples" / "hypercorn.toml"))
    assert [str(w.message) for w in caught if w.category is ConfigWarning] == [
        f"{ROOT / 'docs' / 'examples' / 'hypercorn.toml'}: Hypercorn setting 'worker_class' "
        "is not supported by trioserve; ignored"
    ]
    assert config == Config(
        bind=["127.0.0.1:8000"],
        keep_alive_timeout=10,
        graceful_timeout=20,
        h11_max_incomplete_size=32768,
        include_server_header=False,
        accesslog="-",
        errorlog="-",
        loglevel="INFO",
        workers=2,
    )
