# The GPU worker image: a Celery worker hosting one shared vLLM engine for one model deployment,
# on the official vLLM 0.32.0 image (CUDA, torch and vLLM as the vLLM project builds them).
#   docker build -f docker/worker.Dockerfile -t steerlab-worker .
# One container per GPU (docker/compose.yaml): a worker never forks after CUDA is initialised.
FROM vllm/vllm-openai:v0.32.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/app
WORKDIR /app
# pyproject.toml's pinned runtime dependencies except torch: the image's CUDA torch (the one its
# vLLM was built against) must stay; the other pins leave torch alone.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('torch==')))" \
        > /tmp/requirements.txt \
    && python3 -m pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && python3 -c "import torch, vllm; print('torch', torch.__version__, 'vllm', vllm.__version__)"
COPY manage.py ./
COPY interventions/ interventions/
COPY workers/ workers/
COPY webapp/ webapp/
# /cache holds the Hugging Face cache (model weights): a volume shared by the workers in compose.
RUN useradd --system --uid 10001 --create-home --home-dir /home/steerlab steerlab \
    && mkdir -p /cache && chown 10001 /cache
ENV HF_HOME=/cache/huggingface
USER 10001
# The vLLM image's entrypoint serves vLLM's own API; this image runs the Celery worker instead.
ENTRYPOINT []
# Healthy while this container's worker beats in the shared cache (a draining one too): a dead
# worker, or one cut off from Redis, turns unhealthy. The model loads at the first run, after.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python3", "-m", "workers.health"]
# SIGTERM (docker stop) is Celery's warm shutdown: the worker stops taking tasks and finishes
# (or hands back) what it runs; compose's stop_grace_period gives it the time.
CMD ["sh", "-c", "exec celery -A workers.celery_app worker -P threads -c \"${STEERLAB_WORKER_CONCURRENCY:-32}\" -Q \"model.${STEERLAB_DEPLOYMENT:?set STEERLAB_DEPLOYMENT}\" -n \"worker@%h\" --loglevel INFO"]
