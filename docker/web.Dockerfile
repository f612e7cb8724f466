# The web image: Django on uvicorn (HTTP, websockets, the OpenAI-compatible API) with the browser
# app's build and the static files served by whitenoise. Built from the repository root:
#   docker build -f docker/web.Dockerfile -t steerlab-web .
# Configuration comes only from the environment at run time (.env.example); nothing secret is here.

# ---- the browser app (Vite): frontend/dist ----
FROM node:20.19-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
# The app's types are generated from these committed specs at build time.
COPY webapp/api/openapi.json /src/webapp/api/openapi.json
COPY interventions/schema/recipe.schema.json /src/interventions/schema/recipe.schema.json
RUN npm run build

# ---- the web server ----
FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/app
WORKDIR /app
# The pinned runtime dependencies of pyproject.toml (not the dev tools, not vLLM); torch from the
# CPU wheel index: the web process never runs a model on a GPU (it only tokenizes prompts).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY manage.py ./
COPY interventions/ interventions/
COPY workers/ workers/
COPY webapp/ webapp/
COPY --from=frontend /src/frontend/dist frontend/dist
# Static files are collected at build time with a throwaway development key (DEBUG only for this
# command; the image's own settings come from the environment when it runs).
# /cache holds the Hugging Face cache (the tokenizers the web side needs): a volume in compose.
RUN DEBUG=true python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app steerlab \
    && mkdir -p /cache && chown 10001 /cache
ENV HF_HOME=/cache/huggingface
USER 10001
EXPOSE 8000
# Liveness: /healthz answers before host validation (no ALLOWED_HOSTS entry for 127.0.0.1 needed)
# and consults no dependency: a dead database is /readyz's business, not a reason to restart.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# uvicorn's own lines go through Django's logging (STEERLAB_LOG_FORMAT); the access log is the
# web app's (with request ids, without share tokens), so uvicorn's is off.
CMD ["uvicorn", "webapp.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--forwarded-allow-ips", "*", "--no-access-log", "--log-config", "webapp/operations/uvicorn-logging.json"]
