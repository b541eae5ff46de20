#!/usr/bin/env bash
# The wheels a lent GPU machine lacks for `python benchmarks/gpu_speed.py`, downloaded HERE (the machine reaches
# no registry) into .whl/ (git-ignored), which a device call carries (`carry: [".whl"]`) and installs with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# The GPU image ('cuda', /work/.library/device/KINDS.md: Python 3.12, torch 2.11, triton 3.6, transformers 5.17,
# tokenizers 0.23.2, huggingface-hub 1.33, safetensors 0.8.0, accelerate 1.15, numpy, pyyaml, regex, tqdm, typer,
# packaging, filelock, pillow) has everything else aim.bench, aim.models and the script import. What it lacks:
#   transformers 5.24.0  aim pins 5.24.x; its Requires-Dist (huggingface-hub>=1.31,<3; tokenizers>=0.23.1,<0.24;
#                        safetensors>=0.8.0; regex>=2025.10.22; typer; ...) are what the image's 5.17 needs too,
#                        except the hub's floor, which 1.33 meets: no other wheel for it
#   hydra-core, omegaconf, antlr4-python3-runtime 4.9.3 (hydra's and omegaconf's ==4.9.*; PyPI has only its
#                        sdist: a pure-Python wheel is built here)
#   aim-mllm             aim itself (`pip wheel . --no-deps`: the package, its conf tree, the toy assets)
# Not carried: torch and triton (the image's 2.11 / 3.6: aim asks torch>=2.4) and aim's other dependencies
# (fvcore, wandb, av, pandas, submitit, ...), which gpu_speed.py's imports do not reach.
# One version each (two of one package stop the install): .whl/ is emptied first. Prints each wheel's size, the
# total, the working tree's size, and fails if together they pass the 64 MiB a device call carries.
#     bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps "${platform[@]}" -d .whl transformers==5.24.0 hydra-core==1.3.8 omegaconf==2.3.1
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
build=$(mktemp -d)  # aim's wheel built from a copy of the tracked files: no build/ or egg-info left in the tree
git ls-files -z | xargs -0 cp --parents -P -t "$build"
python3 -m pip wheel -q --no-deps -w .whl "$build"
rm -rf "$build"

ls -l .whl/*.whl | awk '{printf "%10.2f MiB  %s\n", $5 / 1048576, $NF}'
wheels=$(cat .whl/*.whl | wc -c)
# what a call sends besides: tracked files and untracked ones git does not ignore
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb | tail -1 | cut -f1)
total=$((wheels + tree))
awk -v w="$wheels" -v t="$tree" -v s="$total" 'BEGIN {printf "wheels %.2f MiB + working tree %.2f MiB = %.2f MiB of 64\n",
    w / 1048576, t / 1048576, s / 1048576}'
if [ "$total" -gt $((64 * 1048576)) ]; then
  echo "gpu_wheels.sh: over the 64 MiB a device call carries" >&2
  exit 1
fi
