"""The documentation agrees with the code: the config table of docs/configuration.md with
conf/gateway.toml and the config schema, the README's ports table with the listeners'
defaults, the `gateway serve` flags it names with the parser, and every relative link."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tomllib

from docs_blocks import REPO_ROOT, documents
from docs_config_table import (
    CONF,
    DOC,
    REGENERATE,
    expected_keys,
    generate,
    parse_table,
)

from gateway.cli.main import build_parser
from gateway.config import Config, load_config

README = REPO_ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
FIX = f"update it with `{REGENERATE}`, then write the meaning of any new key in its row"


def test_config_table_lists_every_key_of_the_default_config_with_its_default() -> None:
    expected = expected_keys(CONF.read_text(encoding="utf-8"))
    rows = parse_table(DOC.read_text(encoding="utf-8"))
    documented = {row.key: row.default for row in rows}
    assert len(documented) == len(rows), f"a key is listed twice in {DOC.name}"
    missing = sorted(set(expected) - set(documented))
    extra = sorted(set(documented) - set(expected))
    wrong = sorted(f"{key}: documented {documented[key]}, default {expected[key]}"
                   for key in set(expected) & set(documented)
                   if documented[key] != expected[key])
    assert not (missing or extra or wrong), (
        f"docs/configuration.md's table is out of date with conf/gateway.toml: missing "
        f"{missing}, no longer in the config {extra}, wrong defaults {wrong}; {FIX}")
    assert [row.key for row in rows] == list(expected), f"keys out of order; {FIX}"


def test_config_table_is_what_the_generator_writes_and_every_key_has_a_meaning() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert generate(CONF.read_text(encoding="utf-8"), text) == text, FIX
    blank = [row.key for row in parse_table(text) if not row.meaning.strip()]
    assert not blank, f"keys without a meaning in docs/configuration.md: {blank}"


def test_default_config_keys_are_the_schema() -> None:
    """Every key of conf/gateway.toml is a field of the config dataclasses and every field
    of a section is in the file, so the table (made from the file) covers the schema."""
    document = tomllib.loads(CONF.read_text(encoding="utf-8"))
    config = load_config(None)
    sections = {f.name for f in dataclasses.fields(Config)}
    tables = {"users", "vhosts", "permissions"}  # [[...]] arrays, kept in AuthConfig
    assert set(document) - tables == sections, "a config section and the file differ"
    for section in sections:
        fields = {f.name for f in dataclasses.fields(getattr(config, section))}
        keys = set(document[section])
        if section == "auth":
            keys |= tables
        assert keys == fields, (f"[{section}]: keys only in conf/gateway.toml "
                                f"{sorted(keys - fields)}, fields only in gateway/config.py "
                                f"{sorted(fields - keys)}")


def test_readme_ports_table_matches_the_listener_defaults() -> None:
    listeners = tomllib.loads(CONF.read_text(encoding="utf-8"))["listeners"]
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Ports\n", 1)[1].split("\n## ", 1)[0]
    seen: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`(\w+)`", cells[0]):
            seen[name] = cells[1].split()[0]
    expected = {name: str(port) for name, port in listeners.items() if name != "host"}
    assert seen == expected, "README.md's ports table and conf/gateway.toml's [listeners] differ"


def test_readme_names_only_real_serve_flags() -> None:
    parser = build_parser()
    actions = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    flags = {opt for action in actions["serve"]._actions for opt in action.option_strings}
    text = README.read_text(encoding="utf-8")
    paragraph = text[text.index("`gateway serve` starts the broker"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    named = set(re.findall(r"`(--[a-z-]+)", paragraph))
    assert named, "README.md's paragraph on `gateway serve` names no flag"
    assert named <= flags, f"README.md names serve flags that do not exist: {named - flags}"


def test_relative_links_resolve_and_readme_links_every_doc() -> None:
    broken = []
    for doc in documents():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO_ROOT)}: {target}")
    assert not broken, f"links to files that do not exist: {broken}"
    linked = {(README.parent / t.split("#", 1)[0]).resolve()
              for t in LINK.findall(README.read_text(encoding="utf-8"))}
    unlinked = [d.name for d in documents()[1:] if d.resolve() not in linked]
    assert not unlinked, f"docs README.md does not link (see its Documentation list): {unlinked}"


def test_readme_layout_names_every_package_and_folder() -> None:
    text = README.read_text(encoding="utf-8")
    layout = text.split("\n## Layout\n", 1)[1]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    folders = {path.split("/")[0] for path in tracked if "/" in path}
    packages = {"/".join(path.split("/")[:2]) for path in tracked
                if path.startswith(("gateway/", "protocols/")) and path.count("/") >= 2}
    missing = sorted(f"{name}/" for name in folders | packages
                     if not name.startswith(".") and f"{name}/" not in layout)
    assert not missing, f"README.md's layout omits {missing}"
