#!/usr/bin/env bash
# One-time set-up of a fresh machine (idempotent): Python package with its test extras,
# Prometheus/promtool/Alertmanager from Debian, livekit-server built with `go install`.
set -euo pipefail
cd "$(dirname "$0")/.."
LIVEKIT_SERVER_VERSION="${LIVEKIT_SERVER_VERSION:-v1.13.5}"

python -m pip install -q --disable-pip-version-check -e ".[test,agents,otel,bithuman]"

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
   || ! command -v prometheus-alertmanager >/dev/null || ! command -v espeak-ng >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager espeak-ng >/dev/null
  else
    echo "setup: prometheus/promtool or espeak-ng missing and not root: install Debian's prometheus, prometheus-alertmanager and espeak-ng packages" >&2
    exit 1
  fi
  # the Debian package starts its own services; syncmon's tests run their own instances
  (systemctl stop prometheus prometheus-alertmanager prometheus-node-exporter 2>/dev/null || true)
fi

GOBIN="${GOBIN:-$HOME/go/bin}"
if [ ! -x "$GOBIN/server" ] && ! command -v livekit-server >/dev/null; then
  echo "setup: building livekit-server $LIVEKIT_SERVER_VERSION with go install (about 2 minutes)"
  GOBIN="$GOBIN" go install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_SERVER_VERSION"
fi
echo "setup: done"
