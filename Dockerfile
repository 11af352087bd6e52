# GPU image for torchx's local_docker, kubernetes and slurm schedulers:
#   docker build -t torchrec_app:gpu .
#   torchx run -s local_docker launch/components.py:train_gpu --image torchrec_app:gpu --nproc 8 --data /data/criteo_1tb
# torch's CUDA wheels carry the CUDA runtime; the host provides the driver
# (NVIDIA Container Toolkit). Pins: requirements/gpu.txt (fbgemm-gpu 1.8 <-> torch 2.13).
FROM python:3.11-slim

ENV VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, so source changes do not reinstall them (the same script as CI).
COPY requirements/ requirements/
COPY launch/install_env.sh launch/install_env.sh
RUN bash launch/install_env.sh gpu --deps-only

# Then the package itself.
COPY pyproject.toml README.md ./
COPY torchrec_app/ torchrec_app/
COPY launch/ launch/
RUN bash launch/install_env.sh gpu

ENTRYPOINT []
CMD ["torchrec-app", "--help"]
