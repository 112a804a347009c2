#!/usr/bin/env bash
# Build the platform image (Dockerfile target `app`) and the execution-service image (target
# `execution-service`) on the local engine, with the tags deploy/docker-compose.yml uses.
#
# They start FROM python:3.11-slim when a registry serves it; otherwise FROM a Debian base made
# here with debootstrap (python -m executions.runtime_images --platform-base TAG) and with
# wheels the host's pip fetched, so the images build on a machine that reaches only the package
# registries. Builds use the host's network, which works whatever bridge the engine has.
#
# Environment:
#   PYTHON           the interpreter with the project installed (default .venv/bin/python)
#   PLATFORM_TAG     default evalplatform:latest
#   SERVICE_TAG      default evalplatform-execution-service:latest
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
platform_tag=${PLATFORM_TAG:-evalplatform:latest}
service_tag=${SERVICE_TAG:-evalplatform-execution-service:latest}

base=python:3.11-slim
offline=()
rm -rf .wheelhouse
if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull -q "$base" >/dev/null 2>&1; then
  base=evalplatform/python-base:3.11
  echo "build-images: no registry serves python:3.11-slim; using $base made with debootstrap" >&2
  "$python" -m executions.runtime_images --platform-base "$base" --offline
  # Nor can a build step reach PyPI the way the host does (a proxy, the host's certificate
  # bundle): the base's own pip, given the host's network and bundle, fetches the wheels for
  # the base's exact Python (markers such as python_full_version differ from the host's), and
  # the build installs those with no index.
  echo "build-images: fetching wheels into .wheelhouse with $base's pip" >&2
  mkdir -p .wheelhouse
  bundle=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  docker run --rm --network host \
    -v "$PWD/requirements.txt:/build/requirements.txt:ro" \
    -v "$PWD/requirements-service.txt:/build/requirements-service.txt:ro" -v "$PWD/.wheelhouse:/build/wheels" \
    -v "$bundle:/build/ca.crt:ro" -e PIP_CERT=/build/ca.crt -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ${PIP_INDEX_URL:+-e PIP_INDEX_URL="$PIP_INDEX_URL"} "$base" sh -c \
    'python -m venv /tmp/venv && /tmp/venv/bin/pip download --quiet --only-binary=:all: -r /build/requirements.txt -d /build/wheels'
  offline=(--build-arg PIP_NO_INDEX=1)
fi
trap 'rm -rf .wheelhouse' EXIT

# The session supervisor is a static binary both images carry; built here, where gcc is.
"$python" -m sandbox.supervisor >/dev/null

for pair in "execution-service=$service_tag" "app=$platform_tag"; do
  target=${pair%%=*}
  tag=${pair#*=}
  echo "build-images: $tag (target $target, from $base)" >&2
  docker build --quiet --network host --build-arg PYTHON_IMAGE="$base" "${offline[@]}" \
    --target "$target" --tag "$tag" . >/dev/null
done
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "${platform_tag%%:*}"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "${service_tag%%:*}"
