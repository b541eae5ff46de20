#!/usr/bin/env bash
# Create (or update) the project's conda environment from environment.yml on a cluster's login node,
# check that it imports, and print how jobs use it.
#   bash launch/setup_env.sh [ENV_NAME]      # default: the `name:` of environment.yml (aim)
#
# Jobs submitted with hydra/launcher=slurm run the same Python as the command that submitted them
# (submitit starts `sys.executable`) with the submitting shell's environment (sbatch --export=ALL), so
# activating this environment before `python -m aim.run ... hydra/launcher=slurm` is usually enough; the
# launcher's `setup` lines (conf/hydra/launcher/slurm.yaml) are for what a compute node needs besides,
# e.g. `module load cuda/12.4`.
set -euo pipefail
cd "$(dirname "$0")/.."
conda=$(command -v mamba || command -v conda || true)
if [ -z "$conda" ]; then
  echo "setup_env: neither mamba nor conda is on PATH (on many clusters: module load miniforge / anaconda)" >&2
  exit 1
fi
name=${1:-$(awk '/^name:/ {print $2; exit}' environment.yml)}
if "$conda" env list | awk '{print $1}' | grep -qx "$name"; then
  echo "setup_env: updating $name from environment.yml" >&2
  "$conda" env update -n "$name" -f environment.yml --prune
else
  echo "setup_env: creating $name from environment.yml" >&2
  "$conda" env create -n "$name" -f environment.yml
fi
"$conda" run -n "$name" python -c "
import torch, submitit, hydra_plugins.aim_sweeper, aim.run
print(f'setup_env: torch {torch.__version__}, CUDA available here: {torch.cuda.is_available()} (login nodes often have no GPU)')"
base=$("$conda" info --base)
cat <<EOT
Environment '$name' is ready. Submit from it:
  conda activate $name && python -m aim.run +exp=main_video hydra/launcher=slurm hydra.launcher.partition=<partition>
or activate it inside every job instead:
  'hydra.launcher.setup=["source $base/etc/profile.d/conda.sh","conda activate $name"]'
EOT
