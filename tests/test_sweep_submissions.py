"""`launch/sweep.py status` maps submitit's pickled submissions (`.submitit/**/<job id>_submitted.pkl`) to the
sweep's jobs by reading their overrides, and never runs code from those files: a sweep dir need not be
trusted."""
import os
import pickle

from submitit.core.utils import DelayedSubmission

from aim.sweep import read_submission, submitted_jobs

MANIFEST = {"jobs": [{"num": 0, "overrides": ["merger=aim"], "subdir": "0"},
                     {"num": 1, "overrides": ["merger=pool"], "subdir": "1"}]}


def submit(sweep_dir, job_id, overrides):
    """What hydra-submitit-launcher writes: the launcher's call (`launcher(overrides, "hydra.sweep.dir",
    num, "job_id_for_<num>", Hydra's singleton state)`) as a cloudpickled DelayedSubmission."""
    from hydra import compose, initialize_config_dir
    from hydra.core.singleton import Singleton
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    from aim.paths import CONF_DIR

    folder = sweep_dir / ".submitit" / job_id
    folder.mkdir(parents=True)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        launcher = SlurmLauncher()
        launcher.config = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        DelayedSubmission(launcher, overrides, "hydra.sweep.dir", 1, "job_id_for_1", Singleton.get_state()).dump(
            folder / f"{job_id}_submitted.pkl")
    return folder / f"{job_id}_submitted.pkl"


class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_submissions_are_matched_to_jobs_by_their_overrides(tmp_path):
    path = submit(tmp_path, "4242_1", ["merger=pool", "hydra.sweep.subdir=1"])
    assert read_submission(path) == ["merger=pool", "hydra.sweep.subdir=1"]
    assert submitted_jobs(tmp_path, MANIFEST) == {1: "4242_1"}


def test_a_malicious_pickle_in_the_sweep_dir_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / ".submitit" / "666"
    folder.mkdir(parents=True)
    (folder / "666_submitted.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    nested = DelayedSubmission(print, ["merger=aim"], RunsCode(marker))  # the override list is fine, the rest not
    nested.dump(folder / "667_submitted.pkl")
    assert submitted_jobs(tmp_path, MANIFEST) == {0: "667"}
    assert not marker.exists()
