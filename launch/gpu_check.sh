#!/usr/bin/env bash
# The GPU check on a fresh single-GPU host with no package index (docs/BENCHMARKS.md, "GPU check").
#
# Usage, from the project root:  bash launch/gpu_check.sh [ARGS...]
#   ARGS go to `python -m torchrec_app.tools.bench.gpu_check` (--out DIR, --parts, --dry-run, ...).
# Env: WHEELS=DIR  the carried wheel parts (default .gpuwheels: partNN.d/blob + SHA256SUMS, made by
#                  ../shared/gpu/prepare_wheels.sh); only read when torchrec / fbgemm_gpu do not import.
#      SITE=DIR    where they are installed (default /tmp/site); LIMIT=SECONDS for the check (default 290).
#
# 1. prints python / torch / CUDA, so a changed host image is seen before anything else;
# 2. if torchrec or fbgemm_gpu is missing: joins the parts, checks SHA256SUMS, installs the
#    wheels with pip --no-index --no-deps into SITE (no package index is needed);
# 3. runs the four parts under `timeout LIMIT`; each prints one line and writes DIR/<part>.json.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels="${WHEELS:-$root/.gpuwheels}"
site="${SITE:-/tmp/site}"
python=${PYTHON:-python3}
"$python" -c "import sys, torch; print('host: python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" || exit 2
export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python" -c "import torchrec, fbgemm_gpu" >/dev/null 2>&1; then
  parts=("$wheels"/part*.d/blob)
  if [ ! -e "${parts[0]}" ]; then
    echo "gpu_check.sh: torchrec / fbgemm_gpu do not import and no wheel parts are in $wheels (make them with ../shared/gpu/prepare_wheels.sh)" >&2
    exit 2
  fi
  unpack="$(mktemp -d)"
  start=$(date +%s)
  cat "${parts[@]}" | tar xf - -C "$unpack" && (cd "$unpack" && sha256sum --quiet -c SHA256SUMS) \
    && "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$unpack"/*.whl \
    || { echo "gpu_check.sh: installing the wheels from $wheels failed (see above)" >&2; exit 2; }
  rm -rf "$unpack"
  echo "installed $(ls "$site" | grep -c dist-info) wheels into $site in $(( $(date +%s) - start ))s"
fi
"$python" - <<'PY' || exit 2
import importlib.metadata as m
import fbgemm_gpu, torchrec  # noqa: F401 - both must import
versions = {}
for name in ("torchrec", "fbgemm-gpu", "fbgemm-gpu-cpu"):
    try:
        versions[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(" | ".join(f"{k} {v}" for k, v in versions.items()))
PY
exec timeout "${LIMIT:-290}" "$python" -m torchrec_app.tools.bench.gpu_check "$@"
