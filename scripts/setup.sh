#!/usr/bin/env bash
# One-time set-up of a fresh machine (idempotent): Python package with its test extras,
# Prometheus/promtool/Alertmanager, espeak-ng and Chromium from Debian, livekit-client from npm
# (the browser viewer of tests/browser), livekit-server and helm built with `go install`.
set -euo pipefail
cd "$(dirname "$0")/.."
LIVEKIT_SERVER_VERSION="${LIVEKIT_SERVER_VERSION:-v1.13.5}"

python -m pip install -q --disable-pip-version-check -e ".[test,agents,otel,bithuman]"

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
   || ! command -v prometheus-alertmanager >/dev/null || ! command -v espeak-ng >/dev/null \
   || ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager espeak-ng chromium >/dev/null
  else
    echo "setup: prometheus/promtool, espeak-ng or chromium missing and not root: install Debian's prometheus, prometheus-alertmanager, espeak-ng and chromium packages" >&2
    exit 1
  fi
  # the Debian package starts its own services; syncmon's tests run their own instances
  (systemctl stop prometheus prometheus-alertmanager prometheus-node-exporter 2>/dev/null || true)
fi

# the browser viewer's livekit-client, pinned by tests/browser/package-lock.json
if [ ! -d tests/browser/node_modules/livekit-client ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

GOBIN="${GOBIN:-$HOME/go/bin}"
if [ ! -x "$GOBIN/server" ] && ! command -v livekit-server >/dev/null; then
  echo "setup: building livekit-server $LIVEKIT_SERVER_VERSION with go install (about 2 minutes)"
  GOBIN="$GOBIN" go install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_SERVER_VERSION"
fi
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
if [ ! -x "$GOBIN/helm" ] && ! command -v helm >/dev/null; then
  echo "setup: building helm $HELM_VERSION with go install (checks deploy/helm)"
  GOBIN="$GOBIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
echo "setup: done"
