"""The command line checked before Hydra starts a job: Hydra's composition errors (a misspelt key, an
unknown group option) become one line with a suggestion, then the config is validated
(`project.validation`). `HYDRA_FULL_ERROR=1` skips all this and shows Hydra's full output.
"""

from __future__ import annotations

import os
import re
import sys

from omegaconf import DictConfig, ListConfig, OmegaConf

from project.config import config_dir
from project.validation import ConfigError, override_errors, parameters, suggestion, validate_config


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _is_plain_run(args: list[str]) -> bool:
    """Only plain `key=value` runs are pre-checked: flags (-m, --cfg, --help, -cn) and sweeps go to Hydra."""
    if any(a.startswith("-") for a in args):
        return False
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:
        return True  # a grammar error: composing reports it
    return not any(o.is_sweep_override() for o in parsed)


def explain_composition_error(config_name: str, overrides: list[str], exc: Exception) -> str:
    """Hydra's multi-line composition error → one line with the fix."""
    text = str(exc)
    if m := re.search(r"Could not find '([^']+)/([^']+)'", text):
        group, option = m.group(1), m.group(2)
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        if not options:
            return f"{group}={option}: no such option in the config group `{group}`"
        return f"{group}={option}: no such option; choose one of: {', '.join(options)}{suggestion(option, options)}"
    if m := re.search(r"Could not override '([^']+)'", text):
        key = m.group(1)
        parent_path, _, leaf = key.rpartition(".")
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "...")
        rest = [o for o in overrides if o.split("=", 1)[0] != key]
        known: list[str] = []
        try:
            root = _compose(config_name, rest)
            parent = OmegaConf.select(root, parent_path) if parent_path else root
            if isinstance(parent, DictConfig):
                known = [str(k) for k in parent if not str(k).startswith("_")]
                if "_target_" in parent:
                    from hydra._internal.utils import _locate

                    params, _ = parameters(_locate(str(parent["_target_"])))
                    if leaf in params:
                        return f"{key} is not in the config; add it with +{key}={value}"
                    known += [p for p in params if p not in known]
        except Exception:
            pass
        hint = suggestion(leaf, known) or f" (to add a new key: +{key}={value})"
        return f"{key}: no such key{hint}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def plain_settings(cfg: DictConfig, args: list[str]) -> dict[str, str]:
    """The `key=value` arguments that set a single value (not a config group, not a `+`/`~` one): key → arg."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = {}
    for arg, override in zip(args, OverridesParser.create().parse_overrides(args), strict=True):
        key = override.key_or_group
        if override.is_add() or override.is_delete() or override.package or "/" in key:
            continue
        if not isinstance(OmegaConf.select(cfg, key, default=None), DictConfig | ListConfig):
            found[key] = arg
    return found


def check_command_line(config_name: str, args: list[str] | None = None) -> None:
    """Compose and validate the command line's config before Hydra starts the job (no run folder is made
    for a config that cannot work). Errors: one line on stderr, exit 2."""
    args = sys.argv[1:] if args is None else args
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or not _is_plain_run(args):
        return
    try:
        cfg = _compose(config_name, args)
    except Exception as exc:
        print(f"error: {explain_composition_error(config_name, args, exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        validate_config(cfg)
        plain = plain_settings(cfg, args)
        if plain:  # their values against the kind of the defaults they replace
            defaults = _compose(config_name, [a for a in args if a not in plain.values()])
            if errors := override_errors(cfg, defaults, list(plain)):
                raise ConfigError(errors[0])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
