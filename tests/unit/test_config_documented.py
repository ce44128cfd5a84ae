"""Every setting is documented: docs/CONFIGURATION.md names each field of ``Settings``
(a row of its table, or a TOML table in the section after it), and every flag the
table gives is one the command line accepts. A setting added without a line there fails
here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from spikewatch.cli import build_parser
from spikewatch.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"
#: settings that exist only as TOML tables, documented as such
TABLES = {
    "exchanges": "[exchanges.<name>]",
    "detectors": "[detectors.<name>]",
    "alerts": "[[alerts]]",
    "destinations": "[destinations.<name>]",
    "usd_rates": "[usd_rates]",
}


def table_rows(text: str) -> dict[str, str]:
    """The settings table: key -> its flag cell."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `([a-z_]+)` \| ([^|]*) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of the parser and its subcommands."""
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= all_flags(sub)
    return flags


def test_every_setting_is_in_the_configuration_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = table_rows(text)
    missing = []
    for name in Settings.__struct_fields__:
        if name in TABLES:
            documented = TABLES[name] in text
        elif name == "alert_profile":  # described with the tables it goes with
            documented = "- `alert_profile`" in text
        else:
            documented = name in rows
        if not documented:
            missing.append(name)
    assert missing == [], f"settings not in docs/CONFIGURATION.md: {missing}"


def test_the_table_names_only_settings_and_flags_that_exist() -> None:
    rows = table_rows(DOC.read_text(encoding="utf-8"))
    assert set(rows) <= set(Settings.__struct_fields__), set(rows) - set(Settings.__struct_fields__)
    flags = all_flags(build_parser())
    for name, cell in rows.items():
        for flag in re.findall(r"`(--[a-z-]+)`", cell):
            assert flag in flags, f"{name}: {flag} is not a flag of any command"
