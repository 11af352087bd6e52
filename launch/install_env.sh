#!/usr/bin/env bash
# Create the project's virtual environment and install the pinned stack into it.
#
# Usage: bash launch/install_env.sh [cpu|gpu]     (default: cpu)
# Env:   VENV=DIR   where the environment lives (default: .venv at the repo root)
#
# The same script builds CI's environment, the README's, and the GPU Docker image's
# (there with the `gpu` variant), so the three cannot drift apart.
set -euo pipefail
variant="${1:-cpu}"
case "$variant" in cpu|gpu) ;; *) echo "install_env.sh: variant must be cpu or gpu, got '$variant'" >&2; exit 2;; esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" -r "$root/requirements/$variant.txt"
# torchrec's wheel asks for the CUDA fbgemm-gpu; its runtime needs are in the file above.
"${pip[@]}" --no-deps -r "$root/requirements/torchrec.txt"
"${pip[@]}" --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -m torchrec_app.env_check
touch "$venv/.installed-$variant"
