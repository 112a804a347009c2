# The platform's own image. Inside it, code execution is disabled unless a safe backend
# (remote execution service, Kubernetes) is configured: the container never gets docker.sock.
#   docker build -t evalplatform .
#   docker run -e SECRET_KEY=... -e ALLOWED_HOSTS=... -e DATABASE_URL=... -p 8000:8000 evalplatform
#   (workers: same image, command `python manage.py qcluster`)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Offline builds (scripts/build-images.sh with no registry) bring the wheels in .wheelhouse
# and pass PIP_NO_INDEX=1; otherwise the pattern matches nothing and pip uses the index.
ARG PIP_NO_INDEX
COPY requirements.txt requirements-service.txt .wheelhous[e] /tmp/build/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /tmp/build -r /tmp/build/requirements.txt

# The execution service needs the sandbox layer's few dependencies (the Docker SDK), no Django.
FROM ${PYTHON_IMAGE} AS build-service
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_INDEX
COPY requirements-service.txt .wheelhous[e] /tmp/build/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /tmp/build -r /tmp/build/requirements-service.txt

# The execution service for execution nodes (docker build --target execution-service):
# python -m execution_service over the node's engine. Only this image gets the engine's
# socket, which makes it root on its node: run it on nodes that hold nothing else.
FROM ${PYTHON_IMAGE} AS execution-service
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build-service /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root sandbox ./sandbox
COPY --chown=root:root execution_service ./execution_service
# The session supervisor, built on the host by scripts/build-images.sh (a static binary).
ENV EVALPLATFORM_SUPERVISOR=/app/sandbox/supervisor/evalplatform-supervisor
RUN test -x "$EVALPLATFORM_SUPERVISOR" || { echo "build the supervisor first: python -m sandbox.supervisor" >&2; exit 1; }
EXPOSE 8700
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import socket; socket.create_connection(('127.0.0.1', 8700), timeout=4).close()"
CMD ["python", "-m", "execution_service", "--host", "0.0.0.0", "--port", "8700"]

# The platform (the default, last target).
FROM ${PYTHON_IMAGE} AS app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=evalplatform.settings \
    VAR_DIR=/var/lib/evalplatform \
    PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/evalplatform && chown app:app /var/lib/evalplatform
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root manage.py ./
COPY --chown=root:root evalplatform ./evalplatform
COPY --chown=root:root executions ./executions
COPY --chown=root:root sandbox ./sandbox
ENV EVALPLATFORM_SUPERVISOR=/app/sandbox/supervisor/evalplatform-supervisor
RUN test -x "$EVALPLATFORM_SUPERVISOR" || { echo "build the supervisor first: python -m sandbox.supervisor" >&2; exit 1; }
COPY --chown=root:root templates ./templates
COPY --chown=root:root static ./static
RUN DEBUG=1 python manage.py collectstatic --noinput --verbosity 0
USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=4)"
# Threads, not sync workers: an API request may wait for its run (?wait=, up to
# EXECUTION_API_MAX_WAIT_S) and a sync worker held that long is killed at gunicorn's timeout.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn evalplatform.wsgi --bind 0.0.0.0:${PORT} --workers 2 --threads 8 --access-logfile -"]
