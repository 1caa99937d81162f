"""Every environment variable the README and docs/operations.md document is read by the code.

The tables' first column names the variables (`NAME`, several per cell at times); each must be
read in config/settings.py, except the few read where they act (PORT: by `make run`).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = (ROOT / "config" / "settings.py").read_text()
# Documented variables read outside config/settings.py, and the file (found wherever it lives)
# that reads them.
READ_ELSEWHERE = {"PORT": "run_all.py"}


def documented(path: Path) -> list[str]:
    """The names in the first column of every table whose header starts with `variable`."""
    names, in_table = [], False
    for line in path.read_text().splitlines():
        if line.startswith("| variable |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if in_table and not line.startswith("|---"):
            first = line.split("|")[1]
            names += re.findall(r"`([A-Z][A-Z0-9_]+)`", first)
    return names


README = documented(ROOT / "README.md")
OPERATIONS = documented(ROOT / "docs" / "operations.md")


def test_the_tables_are_found():
    assert "DATABASE_URL" in README and "ABACUS_ANALYSIS_WORK_MEM" in README
    assert "DATABASE_URL" in OPERATIONS


@pytest.mark.parametrize("name", sorted(set(README + OPERATIONS)))
def test_every_documented_variable_is_read(name):
    if name in READ_ELSEWHERE:
        [path] = [p for p in ROOT.glob(f"*/**/{READ_ELSEWHERE[name]}") if ".venv" not in p.parts]
        source = path.read_text()
    else:
        source = SETTINGS
    assert re.search(rf"[\"']{name}[\"']", source), f"{name} is documented but never read"


def test_the_analysis_database_settings_come_from_the_environment(monkeypatch, reload_settings):
    """ABACUS_ANALYSIS_WORK_MEM and ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS (read by
    analysis/services.py): the documented defaults, the environment's values, bad values refused."""
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.delenv("ABACUS_ANALYSIS_WORK_MEM", raising=False)
    monkeypatch.delenv("ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS", raising=False)
    fresh = reload_settings()
    assert fresh.ABACUS_ANALYSIS_WORK_MEM == "256MB"
    assert fresh.ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS == 1_400_000
    monkeypatch.setenv("ABACUS_ANALYSIS_WORK_MEM", "1GB")
    monkeypatch.setenv("ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS", "60000")
    fresh = reload_settings()
    assert fresh.ABACUS_ANALYSIS_WORK_MEM == "1GB"
    assert fresh.ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS == 60_000
    monkeypatch.setenv("ABACUS_ANALYSIS_WORK_MEM", "256MB'; DROP TABLE x; --")
    with pytest.raises(ImproperlyConfigured):
        reload_settings()


def test_the_incremental_connections_setting_is_bounded(monkeypatch, reload_settings):
    """ABACUS_INCREMENTAL_CONNECTIONS and ABACUS_INCREMENTAL_PARALLEL_FROM
    (analysis/incremental_shards.py): their defaults, the environment's value, and values out
    of range refused."""
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.delenv("ABACUS_INCREMENTAL_CONNECTIONS", raising=False)
    monkeypatch.delenv("ABACUS_INCREMENTAL_PARALLEL_FROM", raising=False)
    assert reload_settings().ABACUS_INCREMENTAL_CONNECTIONS == 2
    monkeypatch.setenv("ABACUS_INCREMENTAL_CONNECTIONS", "1")
    assert reload_settings().ABACUS_INCREMENTAL_CONNECTIONS == 1
    for bad in ("0", "17"):
        monkeypatch.setenv("ABACUS_INCREMENTAL_CONNECTIONS", bad)
        with pytest.raises(ImproperlyConfigured, match="ABACUS_INCREMENTAL_CONNECTIONS"):
            reload_settings()
    monkeypatch.setenv("ABACUS_INCREMENTAL_CONNECTIONS", "2")
    assert reload_settings().ABACUS_INCREMENTAL_PARALLEL_FROM == 10_000
    monkeypatch.setenv("ABACUS_INCREMENTAL_PARALLEL_FROM", "0")
    with pytest.raises(ImproperlyConfigured, match="ABACUS_INCREMENTAL_PARALLEL_FROM"):
        reload_settings()
