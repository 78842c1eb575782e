#!/usr/bin/env bash
# Make sure the LiteLLM proxy is installed, pinned, in its own virtualenv
# (.venv-litellm at the repository root). It is kept apart from the watchdog's
# .venv because litellm's dependency set is huge and must not leak into it.
# Idempotent: a stamp file .venv-litellm/.installed-<version> makes a second
# run a no-op. pip's configured index is used as is.
set -euo pipefail

# Exact pin. 1.103 and newer do not resolve from the package index reachable
# here; 1.82.7 and 1.82.8 were compromised releases and are refused.
LITELLM_VERSION="${LITELLM_VERSION:-1.102.4}"
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LITELLM_VENV:-$ROOT/.venv-litellm}"
STAMP="$VENV/.installed-$LITELLM_VERSION"

log() { echo "ensure-litellm: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

case "$LITELLM_VERSION" in
  1.82.7 | 1.82.8) fail "litellm $LITELLM_VERSION is a compromised release; fix: set LITELLM_VERSION to another exact version (default 1.102.4)" ;;
  *[!0-9.]* | "") fail "LITELLM_VERSION='$LITELLM_VERSION' is not an exact version; fix: set it like 1.102.4" ;;
esac

if [ -f "$STAMP" ] && [ -x "$VENV/bin/litellm" ]; then
  log "litellm $LITELLM_VERSION already present at ${VENV#"$ROOT"/}/bin/litellm (stamp $(basename "$STAMP"))"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating the virtualenv ${VENV#"$ROOT"/} with $PYTHON"
  "$PYTHON" -m venv "$VENV" \
    || fail "'$PYTHON -m venv $VENV' failed; fix: install the venv module (apt-get install python3-venv) or set PYTHON to a Python 3.11+"
fi

log "installing litellm[proxy]==$LITELLM_VERSION into ${VENV#"$ROOT"/} (several minutes, about 770 MB)"
"$VENV/bin/python" -m pip install -q --upgrade pip \
  || fail "upgrading pip in $VENV failed; fix: check pip's index configuration (pip config list), or remove $VENV and rerun"
"$VENV/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_VERSION" \
  || fail "'pip install litellm[proxy]==$LITELLM_VERSION' failed; fix: check that this version resolves from pip's configured index (1.103+ do not here), or set LITELLM_VERSION"

# Verify: the CLI's --version first, the package metadata as a fallback
# (litellm 1.102.4 has no litellm.__version__). LITELLM_LOCAL_MODEL_COST_MAP
# keeps the import from fetching the model cost map over the network.
[ -x "$VENV/bin/litellm" ] || fail "$VENV/bin/litellm missing after install; fix: remove $VENV and rerun"
export LITELLM_LOCAL_MODEL_COST_MAP=True
got="$("$VENV/bin/litellm" --version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -1 || true)"
if [ -z "$got" ]; then
  got="$("$VENV/bin/python" -c 'import litellm; print(litellm.__version__)' 2>/dev/null || true)"
fi
if [ -z "$got" ]; then
  got="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
fi
[ "$got" = "$LITELLM_VERSION" ] \
  || fail "installed litellm reports version '${got:-none}', expected $LITELLM_VERSION; fix: remove $VENV and rerun"

rm -f "$VENV"/.installed-*
touch "$STAMP"
log "litellm $got at ${VENV#"$ROOT"/}/bin/litellm"
