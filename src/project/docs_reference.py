"""The configuration reference page, generated from `conf/`.

`python -m project.docs_reference` writes `docs/reference/config.md`: every config group, its options, and
every key with its default and the comment written above it or beside it in the YAML file. The comments in
`conf/` are the documentation; this module only reads them (line by line: a YAML parser drops comments).
`--check` exits 1 when the page is out of date or a key has no comment (tests/test_docs_reference.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from project.config import config_dir

# Hydra's own keys: what they mean is Hydra's documentation, not ours.
EXEMPT_KEYS = frozenset({"defaults", "_target_", "_partial_", "_recursive_", "_convert_"})
PAGE = Path("docs/reference/config.md")

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_@+./-]+):(?:\s+(?P<rest>.*))?$")
_COMMENT = re.compile(r"^\s*#\s?(?P<text>.*)$")


@dataclass
class Key:
    """One key of one config file: its dotted path, default as written, and its comment."""

    path: str
    default: str
    comment: str
    line: int
    mapping: bool = False


@dataclass
class ConfigFile:
    """One YAML file of `conf/`: what its leading comment says, and its keys in file order."""

    name: str
    description: str = ""
    package: str | None = None
    keys: list[Key] = field(default_factory=list)

    def undocumented(self) -> list[Key]:
        """Keys with no comment, other than Hydra's own and mappings whose children say what they are."""
        exempt = lambda k: k.mapping or k.path.rsplit(".", 1)[-1] in EXEMPT_KEYS  # noqa: E731
        return [k for k in self.keys if not k.comment and not exempt(k)]


def _split_comment(rest: str) -> tuple[str, str]:
    """`value  # comment` → (value, comment), ignoring `#` inside quotes."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def parse(path: Path, name: str) -> ConfigFile:
    """Read one config file's keys and comments without a YAML library (which would drop the comments)."""
    lines = path.read_text().splitlines()
    result = ConfigFile(name=name)
    buffer: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    seen_key = False
    list_parent: Key | None = None
    list_indent = -1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            if not seen_key and buffer:
                result.description = _describe(buffer)
            buffer = []
            continue
        comment = _COMMENT.match(line)
        if comment:
            text = comment.group("text")
            if text.startswith("@package"):
                result.package = text.split(None, 1)[1].strip()
            else:
                buffer.append(text.strip())
            continue
        indent = len(line) - len(line.lstrip(" "))
        if line.lstrip().startswith("- "):
            if list_parent is not None and indent >= list_indent:
                item, _ = _split_comment(line.lstrip()[2:])
                list_parent.default += ("" if list_parent.default == "[" else ", ") + item
            buffer = []
            continue
        match = _KEY.match(line)
        if not match:
            buffer = []
            continue
        if list_parent is not None:
            _close(list_parent)
            list_parent = None
        if not seen_key and buffer and match.group("key") in EXEMPT_KEYS:
            result.description = _describe(buffer)
            buffer = []
        seen_key = True
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match.group("key")
        value, inline = _split_comment(match.group("rest") or "")
        dotted = ".".join([k for _, k in stack] + [key])
        entry = Key(path=dotted, default=value, comment=" ".join([*buffer, inline]).strip(), line=number)
        buffer = []
        if value:
            result.keys.append(entry)
        elif key != "defaults":
            # a mapping or a block list: a list is one key; a mapping's children are the keys
            stack.append((indent, key))
            entry.default = "["
            list_parent, list_indent = entry, indent
            result.keys.append(entry)
        else:
            list_parent, list_indent = None, -1
    if list_parent is not None:
        _close(list_parent)
    # a mapping is documented by its children; its own comment, if any, is shown above them
    for key in result.keys:
        key.mapping = _is_mapping(result.keys, key)
        key.default = "" if key.mapping else key.default
    result.keys = [k for k in result.keys if not k.mapping or k.comment]
    return result


def _describe(lines: list[str]) -> str:
    """A file's leading comment as Markdown: usage lines (`python -m ...`) as code."""
    return " ".join(f"`{line}`" if line.startswith("python -m") else _escape(line) for line in lines if line)


def _escape(text: str) -> str:
    """Comments say `<run>`: Markdown would take it for an HTML tag."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _close(entry: Key) -> None:
    """End a block list (`[a, b]`), or mark an empty value as YAML's null."""
    entry.default = "null" if entry.default == "[" else entry.default + "]"


def _is_mapping(keys: list[Key], parent: Key) -> bool:
    return any(k.path.startswith(parent.path + ".") for k in keys)


def config_files(root: Path | None = None) -> dict[str, list[ConfigFile]]:
    """Every YAML file under `root`, by group (`""` for the top-level command configs)."""
    root = Path(root or config_dir())
    groups: dict[str, list[ConfigFile]] = {}
    for path in sorted(root.rglob("*.yaml")):
        relative = path.relative_to(root)
        group = relative.parent.as_posix() if relative.parent != Path(".") else ""
        groups.setdefault(group, []).append(parse(path, relative.stem))
    _inherit_comments(groups)
    return groups


def _homes(group: str, config: ConfigFile, path: str, groups: dict) -> list[tuple[str, str]]:
    """Where a key lives in the composed config, most specific first: `_global_` files and command
    configs name other groups' keys by their full path (`data.batch_size`, `hydra.run.dir`); a command
    config's own keys fall back to `train`'s (`seed`, `tags`)."""
    head, _, rest = path.partition(".")
    if rest and head in groups and (config.package == "_global_" or group == ""):
        return [(head, rest)]
    if group == "":
        return [(f":{config.name}", path), (":train", path)]
    if config.package == "_global_":
        return [(":train", path)]
    return [(group, path)]


def _inherit_comments(groups: dict[str, list[ConfigFile]]) -> None:
    """A key documented in one file documents the same key elsewhere: another option of its group, an
    experiment overriding it, a command config repeating it. Each key needs its comment once."""
    known: dict[tuple[str, str], str] = {}
    for group, configs in groups.items():
        for config in configs:
            for key in config.keys:
                if key.comment:
                    known.setdefault(_homes(group, config, key.path, groups)[0], key.comment)
    for group, configs in groups.items():
        for config in configs:
            for key in config.keys:
                homes = _homes(group, config, key.path, groups)
                if not key.comment:
                    key.comment = next((known[h] for h in homes if h in known), "")


def _cell(text: str) -> str:
    return _escape(text).replace("|", "\\|")


def _table(config: ConfigFile) -> list[str]:
    rows = [k for k in config.keys if k.path.rsplit(".", 1)[-1] not in EXEMPT_KEYS]
    if not rows:
        return ["(no keys of its own: it only composes other options)", ""]
    out = ["| key | default | what it is |", "|---|---|---|"]
    for key in rows:
        default = f"`{key.default}`".replace("|", "\\|") if key.default else ""
        out.append(f"| `{key.path}` | {default} | {_cell(key.comment)} |")
    return [*out, ""]


def render(root: Path | None = None) -> str:
    """The whole reference page as Markdown."""
    groups = config_files(root)
    out = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m project.docs_reference` from conf/: edit the YAML comments, not this page -->",
        "",
        "Generated from the YAML files in `conf/`: every command config, every group and option, and every key",
        "with its default and the comment written above it or beside it. Change a comment in `conf/` and run",
        "`python -m project.docs_reference`; `tests/test_docs_reference.py` fails while this page is out of date",
        "or a key has no comment. Hydra's own keys (`defaults`, `_target_`, `_partial_`, `_recursive_`,",
        "`_convert_`) are exempt from the comment rule: Hydra's documentation says what they do. A mapping is",
        "documented by its keys. Values such as `${paths.data_dir}` are OmegaConf interpolations, resolved",
        "when the config is composed; `???` means the value is required.",
        "",
        "## Commands",
        "",
    ]
    for config in groups.pop("", []):
        out += [f"### `{config.name}.yaml`", "", config.description, ""]
        out += _table(config)
    for group, configs in groups.items():
        names = ", ".join(f"`{c.name}`" for c in configs)
        out += [f"## `{group}`", "", f"Options: {names}.", ""]
        for config in configs:
            where = f" (`# @package {config.package}`)" if config.package else ""
            out += [f"### `{group}={config.name}`{where}", ""]
            if config.description:
                out += [config.description, ""]
            out += _table(config)
    return "\n".join(out).rstrip() + "\n"


def undocumented(root: Path | None = None) -> list[str]:
    """`file:line key` for every key without a comment."""
    missing = []
    for group, configs in config_files(root).items():
        for config in configs:
            prefix = f"{group}/" if group else ""
            missing += [f"conf/{prefix}{config.name}.yaml:{k.line} {k.path}" for k in config.undocumented()]
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PAGE, help="the page to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale or a key lacks a comment")
    args = parser.parse_args(argv)
    page = render()
    missing = undocumented()
    if args.check:
        stale = not args.out.exists() or args.out.read_text() != page
        for item in missing:
            print(f"undocumented key: {item}", file=sys.stderr)
        if stale:
            print(f"{args.out} is out of date: run python -m project.docs_reference", file=sys.stderr)
        return 1 if stale or missing else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out} ({len(missing)} undocumented keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
