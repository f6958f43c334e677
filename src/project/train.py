"""`python -m project.train [overrides]`: fit, test the best checkpoint, then the post-fit steps."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from project import run
from project.config import UserError, config_dir, exit_on_user_error


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    output_dir = HydraConfig.get().runtime.output_dir
    if cfg.extras.get("print_config", True):
        run.print_config_tree(cfg, save_to=output_dir)
    try:
        result = run.train(cfg)
    except UserError as err:
        exit_on_user_error(err)
    run.report(result, output_dir)
    objective = cfg.get("optimized_metric")
    if objective:
        if objective not in result["metrics"]:
            raise KeyError(f"optimized_metric={objective!r} was not logged; have: {sorted(result['metrics'])}")
        return result["metrics"][objective]
    return None


if __name__ == "__main__":
    main()
