"""Configuration files, Hypercorn-style: ``load_config`` with a TOML path,
``python:module[.attr]`` and ``file:path.py``.

Covers: a realistic Hypercorn TOML file and the same settings as a Python module
(``python:``) and file (``file:``) load to equal ``Config`` objects; each Hypercorn
key trioserve does not implement gives exactly one ``ConfigWarning`` naming it; an
unknown key is a ``ConfigError`` with a did-you-mean hint; a wrong type names the
key, the value and what was expected; every unreadable source (invalid TOML, missing
file, missing module or attribute, a config that raises while it runs) is a one-line
``ConfigError`` naming the source; a Python config's imports, helper functions and
classes and UPPERCASE constants are not settings; ``ssl.CERT_REQUIRED`` is accepted
for ``verify_mode`` as Hypercorn's Python configs write it. The fixture files live
in ``tests/fixtures/config``.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pipes import clean_environment

from trioserve import Config, ConfigError, ConfigWarning
from trioserve._config_sources import HYPERCORN_DEFAULTS, HYPERCORN_ONLY_KEYS, load_config

CONFIG_DIR = Path(__file__).parent / "fixtures" / "config"
HYPERCORN_TOML = CONFIG_DIR / "hypercorn.toml"
HYPERCORN_PY = CONFIG_DIR / "hypercorn_config.py"

#: The Hypercorn-only keys hypercorn.toml and hypercorn_config.py set to other
#: values than Hypercorn's defaults (their ``worker_class = "trio"`` is what
#: trioserve does anyway).
IGNORED_IN_FIXTURE = {"server_names", "pid_path"}

FIXTURE_MODULES = {p.stem for p in CONFIG_DIR.glob("*.py")}


@pytest.fixture(autouse=True)
def config_modules_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put tests/fixtures/config on sys.path for ``python:``; forget the imported
    fixture modules afterwards so that each test imports them afresh."""
    monkeypatch.syspath_prepend(str(CONFIG_DIR))
    yield
    for name in FIXTURE_MODULES:
        sys.modules.pop(name, None)


def load_warning_keys(source: str) -> tuple[Config, list[str]]:
    """Load ``source``; return the config and the messages of its ConfigWarnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(source)
    assert all(issubclass(w.category, ConfigWarning) for w in caught), caught
    return config, [str(w.message) for w in caught]


def config_error(source: str) -> str:
    """The one-line message of the ConfigError that loading ``source`` raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        with pytest.raises(ConfigError) as info:
            load_config(source)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "trioserve.toml"
    path.write_text(text)
    return str(path)


def write_py(tmp_path: Path, text: str) -> str:
    path = tmp_path / "trioserve_cfg.py"
    path.write_text(text)
    return str(path)


# -- the same settings in three formats -------------------------------------------------


def test_hypercorn_toml_python_module_and_python_file_load_to_equal_configs() -> None:
    """A Hypercorn user's configuration keeps its meaning in every format Hypercorn
    reads: the three loads compare equal, and equal to the settings written out."""
    sources = [str(HYPERCORN_TOML), "python:hypercorn_config", f"file:{HYPERCORN_PY}"]
    loaded = {source: load_warning_keys(source) for source in sources}
    configs = [config for config, _ in loaded.values()]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0] == Config(
        bind=["127.0.0.1:8080", "[::1]:8080"],
        backlog=512,
        keep_alive_timeout=15,
        graceful_timeout=20.0,
        read_timeout=45,
        startup_timeout=30,
        shutdown_timeout=25,
        h11_max_incomplete_size=32768,
        max_requests=1000,
        max_requests_jitter=50,
        workers=4,
        root_path="/api",
        include_server_header=False,
        include_date_header=True,
        ciphers="ECDHE+AESGCM",
        umask=0o007,
        accesslog="-",
        errorlog="-",
        access_log_format='%(h)s "%(r)s" %(s)s %(b)s %(L)s',
        loglevel="WARNING",
    )
    for source, (_, messages) in loaded.items():
        # One warning per ignored Hypercorn key, each naming its key and the source.
        assert len(messages) == len(IGNORED_IN_FIXTURE), messages
        for key in IGNORED_IN_FIXTURE:
            [message] = [m for m in messages if f"'{key}'" in m]
            assert source in message


def test_python_object_form_reads_the_objects_attributes() -> None:
    """``python:module.Attr``: the class's public attributes are the settings (its
    dunder attributes are not)."""
    config = load_config("python:with_helpers.Production")
    assert config == Config(keep_alive_timeout=7.5, max_requests=500)


def test_toml_lists_and_octal_become_normalised_values(tmp_path: Path) -> None:
    source = write_toml(
        tmp_path, 'bind = "0.0.0.0:9000"\nheaders = ["X-Served-By: web-1"]\numask = "022"\n'
    )
    config = load_config(source)
    assert config.bind == ("0.0.0.0:9000",)
    assert config.headers == (("x-served-by", "web-1"),)
    assert config.umask == 0o022


# -- Hypercorn keys trioserve does not implement ------------------------------------


@pytest.mark.parametrize(
    ("key", "toml_value"),
    [
        ("worker_class", '"uvloop"'),
        ("server_names", '["example.com"]'),
        ("pid_path", '"/run/app.pid"'),
        ("max_app_queue_size", "20"),
        ("h2_max_concurrent_streams", "200"),
        ("alpn_protocols", '["http/1.1"]'),
        ("user", "1000"),
    ],
)
def test_hypercorn_only_key_gives_exactly_one_warning_naming_it(
    tmp_path: Path, key: str, toml_value: str
) -> None:
    """Ignored with one warning, not an error: the file works unchanged (a strict
    loader that refuses them breaks every Hypercorn config with ``worker_class``)."""
    source = write_toml(tmp_path, f"{key} = {toml_value}\nkeep_alive_timeout = 9\n")
    with pytest.warns(ConfigWarning) as record:
        config = load_config(source)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"'{key}'" in message
    assert source in message
    assert config == Config(keep_alive_timeout=9)


def test_hypercorns_websocket_keys_keep_their_meaning(tmp_path: Path) -> None:
    source = write_toml(
        tmp_path, "websocket_max_message_size = 1048576\nwebsocket_ping_interval = 5.0\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_config(source)
    assert config.websocket_max_message_size == 1048576
    assert config.websocket_ping_interval == 5.0


def test_every_hypercorn_only_key_warns_once_in_one_file(tmp_path: Path) -> None:
    """All of them together: one warning each, no key named twice."""
    source = write_py(
        tmp_path, "".join(f"{key} = 'changed'\n" for key in sorted(HYPERCORN_ONLY_KEYS))
    )
    config, messages = load_warning_keys(f"file:{source}")
    assert config == Config()
    assert len(messages) == len(HYPERCORN_ONLY_KEYS)
    for key in HYPERCORN_ONLY_KEYS:
        assert sum(f"'{key}'" in m for m in messages) == 1, key


def test_hypercorn_defaults_of_ignored_keys_pass_without_a_warning(tmp_path: Path) -> None:
    """A file written out from Hypercorn's defaults holds every key: a default
    changes nothing, so nothing is said about it."""
    lines = [f"{key} = {value!r}\n" for key, value in HYPERCORN_DEFAULTS.items()]
    source = write_py(tmp_path, "".join(line for line in lines if "object at" not in line))
    config, messages = load_warning_keys(f"file:{source}")
    assert config == Config()
    assert messages == []


def test_hypercorn_defaults_in_toml_run_the_command_without_warnings(tmp_path: Path) -> None:
    """(The app is missing, so that the command ends once the file is read.)"""
    (tmp_path / "hc.toml").write_text(
        'debug = false\nserver_names = []\nworker_class = "asyncio"\n'
        'alpn_protocols = ["h2", "http/1.1"]\nh2_max_concurrent_streams = 100\n'
        "keep_alive_max_requests = 1000\ndaemon = true\n"
        'bind = "127.0.0.1:0"\n'
    )
    completed = subprocess.run(
        [sys.executable, "-m", "trioserve", "--config", "hc.toml", "absent:app"],
        cwd=tmp_path,
        env=clean_environment({}),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert completed.returncode == 3, completed.stderr
    assert "Warning" not in completed.stderr, completed.stderr


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        (
            "worker_class = 'uvloop'",
            "Hypercorn setting 'worker_class' = 'uvloop' is ignored: trioserve runs apps on "
            "trio, not on an asyncio loop; see docs/asyncio-libraries.md",
        ),
        ("debug = True", "Hypercorn setting 'debug' is not supported by trioserve; ignored"),
        (
            "server_names = ['example.com']",
            "Hypercorn setting 'server_names' is not supported by trioserve; ignored",
        ),
    ],
)
def test_a_changed_ignored_key_warns_and_uvloop_says_apps_run_on_trio(
    tmp_path: Path, line: str, warning: str
) -> None:
    source = write_py(tmp_path, line + "\n")
    _, messages = load_warning_keys(f"file:{source}")
    assert messages == [f"file:{source}: {warning}"]


# -- unknown keys and wrong types ---------------------------------------------------


@pytest.mark.parametrize("form", ["toml", "file"])
def test_misspelt_key_is_an_error_with_did_you_mean(tmp_path: Path, form: str) -> None:
    """A permissive loader (Hypercorn's) silently ignores the typo and the server
    runs with the default the user meant to change."""
    if form == "toml":
        source = write_toml(tmp_path, "keep_alive_timout = 20\n")
    else:
        source = "file:" + write_py(tmp_path, "keep_alive_timout = 20\n")
    message = config_error(source)
    assert "unknown configuration key 'keep_alive_timout'" in message
    assert "did you mean 'keep_alive_timeout'?" in message
    assert source in message


def test_unknown_key_without_a_close_match_has_no_suggestion(tmp_path: Path) -> None:
    message = config_error(write_toml(tmp_path, "frobnicate = 1\n"))
    assert "unknown configuration key 'frobnicate'" in message
    assert "did you mean" not in message


@pytest.mark.parametrize(
    ("line", "key", "value_text", "expected"),
    [
        ('keep_alive_timeout = "5"', "keep_alive_timeout", "'5' (str)", "number of seconds"),
        ("backlog = 12.5", "backlog", "12.5 (float)", "integer"),
        (
            'include_server_header = "false"',
            "include_server_header",
            "'false' (str)",
            "true or false",
        ),
        ("bind = 8000", "bind", "8000", "string"),
        ('lifespan = "sometimes"', "lifespan", "'sometimes'", "'auto', 'on', 'off'"),
        ("root_path = 5", "root_path", "5 (int)", "string"),
        ('headers = ["no-colon"]', "headers", "no-colon", "'name:value'"),
    ],
)
def test_wrong_type_names_key_value_and_expectation(
    tmp_path: Path, line: str, key: str, value_text: str, expected: str
) -> None:
    source = write_toml(tmp_path, line + "\n")
    message = config_error(source)
    assert message.startswith(f"{source}: {key} ")
    assert value_text in message
    assert expected in message


# -- unreadable sources ---------------------------------------------------------------


def test_invalid_toml_is_one_line_naming_file_and_position(tmp_path: Path) -> None:
    source = write_toml(tmp_path, 'bind = ["127.0.0.1:8000"\nworkers = 2\n')
    message = config_error(source)
    assert message.startswith(f"{source}: invalid TOML")
    assert "line" in message


@pytest.mark.parametrize(("prefix", "name"), [("", "absent.toml"), ("file:", "absent.py")])
def test_missing_file(tmp_path: Path, prefix: str, name: str) -> None:
    source = f"{prefix}{tmp_path / name}"
    assert config_error(source) == f"{source}: file not found"


def test_python_missing_module() -> None:
    message = config_error("python:no_such_trioserve_config")
    assert message == "python:no_such_trioserve_config: module 'no_such_trioserve_config' not found"


def test_python_missing_package_of_dotted_name() -> None:
    message = config_error("python:no_such_trioserve_pkg.settings")
    assert message.startswith("python:no_such_trioserve_pkg.settings: ")
    assert "no_such_trioserve_pkg" in message


def test_python_missing_attribute() -> None:
    message = config_error("python:hypercorn_config.production")
    assert (
        message
        == "python:hypercorn_config.production: 'hypercorn_config' has no attribute 'production'"
    )


def test_file_config_raising_is_one_line_naming_the_exception() -> None:
    source = f"file:{CONFIG_DIR / 'raises_inside.py'}"
    message = config_error(source)
    assert message == f"{source}: KeyError: 'TRIOSERVE_FIXTURE_UNSET_VARIABLE'"


def test_python_config_raising_is_a_config_error_naming_the_exception() -> None:
    """The same config through ``python:``: the CLI turns only ConfigError into its
    one-line exit 2, so anything else escapes as a traceback."""
    message = config_error("python:raises_inside")
    assert message.startswith("python:raises_inside: ")
    assert "KeyError" in message
    assert "TRIOSERVE_FIXTURE_UNSET_VARIABLE" in message


def test_python_config_with_missing_dependency_names_the_dependency() -> None:
    """The config module exists; an import inside it fails. "module
    'needs_missing_dependency' not found" would send the user to the wrong file."""
    message = config_error("python:needs_missing_dependency")
    assert "trioserve_fixture_dependency_not_installed" in message
    assert "module 'needs_missing_dependency' not found" not in message


# -- what a Python config may contain besides settings -------------------------------


@pytest.mark.parametrize("form", ["python", "file"])
def test_imports_helpers_classes_and_constants_are_not_settings(form: str) -> None:
    """with_helpers.py imports os and Path, defines a function, a class and
    UPPERCASE constants and uses them to compute its settings; none of these is a
    key (a loader taking every module attribute reports 'os', 'Path', ... unknown)."""
    source = "python:with_helpers" if form == "python" else f"file:{CONFIG_DIR / 'with_helpers.py'}"
    # filterwarnings=error: any ConfigWarning would fail the test too.
    config = load_config(source)
    assert config == Config(
        bind=["127.0.0.1:8000"],
        keep_alive_timeout=7.5,
        root_path="/config",
    )


def test_future_import_in_a_python_config_is_not_a_setting() -> None:
    """``from __future__ import annotations`` binds the name ``annotations`` in the
    module, an import like any other, not a configuration key."""
    config = load_config(f"file:{CONFIG_DIR / 'future_import.py'}")
    assert config == Config(keep_alive_timeout=12)


def test_ssl_cert_required_constant_is_accepted_for_verify_mode() -> None:
    """Hypercorn's Python configs say ``verify_mode = ssl.CERT_REQUIRED``; it means
    the same as the string ``"CERT_REQUIRED"`` a TOML file or the CLI gives."""
    config = load_config("python:tls_verify")
    assert config == Config(verify_mode="CERT_REQUIRED")
