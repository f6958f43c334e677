"""`python -m project.prepare data=image_folder data.root=PATH`: prepare a user's images (or check that
the prepared set is current) and print where the set and its data card are."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from project.config import UserError, config_dir, exits_on_user_error
from project.data.from_run import build_datamodule


def prepare(cfg: DictConfig) -> dict:
    datamodule = build_datamodule(cfg.data)
    if not hasattr(datamodule, "prepared"):
        raise UserError(f"{cfg.data.get('_target_')} needs no preparation: use data=image_folder or data=image_csv")
    meta = datamodule.prepared()
    return {"directory": str(datamodule.prepared_dir), **meta}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="prepare")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    meta = prepare(cfg)
    sizes = ", ".join(f"{split} {sum(counts.values())}" for split, counts in meta["counts"].items())
    print(f"classes: {', '.join(meta['class_names'])}")
    print(f"images: {sizes}; mean {meta['mean']}, std {meta['std']}")
    print(f"prepared set: {meta['directory']}")
    print(f"data card: {meta['directory']}/data_card.md")


if __name__ == "__main__":
    from project.command_line import check_command_line

    check_command_line("prepare")  # a mistake in the command line: one line, exit 2, before Hydra starts
    main()
