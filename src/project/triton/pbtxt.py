"""Protobuf text format (what Triton's config.pbtxt is) from plain dicts and lists.

Written by hand rather than through Triton's protobuf classes so exporting needs no tritonclient; the tests
parse every file back with tritonclient's own `ModelConfig` schema, strictly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class Enum(str):
    """An enum value (written bare: `kind: KIND_CPU`), as opposed to a quoted string."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a double-quoted string with escapes, as text format reads it


def render(message: Mapping[str, Any], indent: int = 0) -> str:
    """One message → text format: nested mappings are sub-messages, lists are repeated fields;
    None values are left out."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{\n{render(value, indent + 1)}{pad}}}")
        elif isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
            body = ",\n".join(f"{pad}  {{\n{render(v, indent + 2)}{pad}  }}" for v in value)
            lines.append(f"{pad}{key} [\n{body}\n{pad}]")
        elif isinstance(value, list | tuple):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def parameters(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Triton's `parameters` map (string values only) as repeated key/value entries."""
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items() if v is not None]
