"""Multi-process and multi-node training on Lightning's DDP (see README "Scaling out").

- `strategy`: `HydraDDPStrategy`, Lightning's DDP whose extra ranks re-run the current Hydra *job*, so a run
  (or each job of a sweep) keeps exactly one folder; `finish_job` ends a job's ranks and process group.
- `relaunch`: the command line a rank > 0 runs, built from the Hydra job (pure, tested on its own).
- `ranks`: which rank this process is, before the Trainer exists (for rank-zero-only printing).
"""
