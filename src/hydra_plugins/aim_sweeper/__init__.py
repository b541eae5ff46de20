"""`hydra/sweeper=aim`: Hydra's basic sweeper (cartesian product of the sweep overrides) that validates
every job and writes `sweep.json` before launching anything, and can relaunch chosen jobs of an earlier
sweep. Hydra only instantiates plugins from the `hydra_plugins` namespace, hence this thin class; the
logic and the reasons for this design are in `aim.sweep`. Importing this module stays cheap (Hydra scans
every plugin module at start-up); aim's plugins are imported only when a sweep starts."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import OmegaConf


class AimSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict] = None,
                 rerun: Optional[List[int]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.rerun = None if rerun is None else [int(n) for n in rerun]

    def sweep(self, arguments: List[str]) -> Any:
        from aim import sweep as aim_sweep

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        loader = self.hydra_context.config_loader
        try:
            if self.rerun is None:
                numbered = list(enumerate(aim_sweep.sweep_overrides(loader, self.params, arguments)))
            else:
                manifest = aim_sweep.read_manifest(sweep_dir)
                numbered = list(zip(self.rerun, aim_sweep.rerun_overrides(manifest, self.rerun)))
            jobs = aim_sweep.plan_jobs(loader, self.config, numbered)  # raises if any job is invalid
            if self.rerun is None:
                aim_sweep.write_manifest(sweep_dir, self.config, jobs)
        except (aim_sweep.SweepError, FileNotFoundError) as exc:
            print(exc, file=sys.stderr)
            sys.exit(2)
        if self.rerun is None:
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        # launch in batches, as the basic sweeper does; job numbers of a rerun restart at 0 (the
        # directories come from the manifest, not from the numbers). A sharded job is one task per shard.
        overrides, to_merge = aim_sweep.launch_list(sweep_dir, jobs, numbered, rerun=self.rerun is not None)
        if to_merge:
            from aim.tracking.shards import merge

            for job in to_merge:  # a rerun of a job whose shards are all complete: only the merge was missing
                merge(sweep_dir / job["subdir"])
                print(f"merged the shards of job {job['num']} into {sweep_dir / job['subdir']}", file=sys.stderr)
        size = self.max_batch_size or max(len(overrides), 1)
        self.overrides = [overrides[i:i + size] for i in range(0, len(overrides), size)]
        returns = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            initial_job_idx += len(batch)
            returns.append(results)
        for results in returns:  # every batch ran; now raise the first failure, as the basic sweeper does
            for r in results:
                _ = r.return_value
        return returns
