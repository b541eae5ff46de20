"""The search sweeper (`hydra.sweeper._target_` in conf/exp/search_tradeoff.yaml): multi-objective search of the
reduction settings with Optuna (NSGA-II by default; hydra-optuna-sweeper's search-space syntax), every trial
validated before launch, sweep.json kept up to date and tradeoff.json (the Pareto set) written. Hydra only instantiates plugins from the `hydra_plugins`
namespace, hence this thin class; the logic and the reasons for it are in `aim.search`. Importing this module
stays cheap (Hydra scans every plugin module at start-up): optuna and aim load only when a search starts."""
from __future__ import annotations

import logging
from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper

# Hydra instantiates the Optuna sampler (importing optuna, then alembic) after it has set up logging at INFO;
# alembic would log a "setup plugin ..." line per module into every search's log
logging.getLogger("alembic").setLevel(logging.WARNING)


class AimOptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, n_trials: int = 20, n_jobs: int = 2, storage: Optional[Any] = None,
                 study_name: Optional[str] = None, params: Optional[Any] = None, offsets: Optional[Any] = None,
                 enqueue: Optional[Any] = None, rerun: Optional[List[int]] = None,
                 max_batch_size: Optional[int] = None) -> None:
        from aim.search import TradeoffSearch

        if max_batch_size is not None:  # the aim sweeper's field, left in the node (conf/exp/search_tradeoff.yaml)
            raise ValueError(f"hydra.sweeper.max_batch_size: not used by this sweeper (use n_jobs), got {max_batch_size}")

        self.search = TradeoffSearch(sampler, n_trials=n_trials, n_jobs=n_jobs, storage=storage,
                                     study_name=study_name, params=params, offsets=offsets, enqueue=enqueue,
                                     rerun=rerun)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.search.sweep(arguments)
