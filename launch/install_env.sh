#!/usr/bin/env bash
# Create the project's virtual environment and install the pinned stack into it.
#
# Usage: bash launch/install_env.sh [cpu|gpu] [--deps-only]     (default: cpu)
# Env:   VENV=DIR   where the environment lives (default: .venv at the repo root)
#
# The same script builds CI's environment, the README's, and the GPU Docker image's
# (there with the `gpu` variant, and --deps-only first so the dependency layer is cached
# apart from the source), so the three cannot drift apart.
set -euo pipefail
variant="${1:-cpu}"
deps_only="${2:-}"
case "$variant" in cpu|gpu) ;; *) echo "install_env.sh: variant must be cpu or gpu, got '$variant'" >&2; exit 2;; esac
case "$deps_only" in ""|--deps-only) ;; *) echo "install_env.sh: unknown option '$deps_only'" >&2; exit 2;; esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" -r "$root/requirements/$variant.txt"
# torchrec's wheel asks for the CUDA fbgemm-gpu; its runtime needs are in the file above.
"${pip[@]}" --no-deps -r "$root/requirements/torchrec.txt"
[ "$deps_only" = "--deps-only" ] && exit 0
"${pip[@]}" --no-deps --no-build-isolation -e "$root"
# The check loads FBGEMM's operators; the CUDA build needs a driver, absent while an image builds.
if [ "$variant" = cpu ] || command -v nvidia-smi >/dev/null 2>&1; then
  "$venv/bin/python" -m torchrec_app.env_check
fi
touch "$venv/.installed-$variant"
