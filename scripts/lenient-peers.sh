#!/usr/bin/env bash
# The lenient real peers of bins/tests/lenient.rs (security issue 14): two venvs under
# ${LENIENT_PEERS_DIR:-${CARGO_TARGET_DIR:-target}/lenient-peers}, one with eventlet 0.36.1
# (before the CVE-2025-58068 fix) and one with a fixed eventlet (EVENTLET_FIXED, default 0.41.3,
# the newest that installs here; the fix is in 0.40.3). wsgiref is the interpreter's own.
# A third venv, imds-clients, holds botocore and ec2-metadata (BOTOCORE, EC2_METADATA) for the
# real IMDSv2 token flows of bins/tests/tokens.rs.
#
# Creates what is missing (pip from PyPI), checks each venv's eventlet version, and prints the
# environment the tests read, for `eval "$(scripts/lenient-peers.sh)"`:
#   MDPROXY_EVENTLET_0_36_PYTHON, MDPROXY_EVENTLET_FIXED_PYTHON, MDPROXY_WSGIREF_PYTHON,
#   MDPROXY_IMDS_CLIENTS_PYTHON
# (the tests also find the venvs under $CARGO_TARGET_DIR/lenient-peers without them). Progress
# goes to stderr. PYTHON picks the interpreter (default python3; 3.8 or later).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
fixed=${EVENTLET_FIXED:-0.41.3}
BOTOCORE=${BOTOCORE:-1.43.11}
EC2_METADATA=${EC2_METADATA:-3.0.0}
dir=${LENIENT_PEERS_DIR:-${CARGO_TARGET_DIR:-target}/lenient-peers}
mkdir -p "$dir"
dir=$(realpath "$dir")

# venv NAME VERSION: $dir/NAME with eventlet==VERSION, made or repaired as needed.
venv() {
  local path=$dir/$1 version=$2 have
  have=$("$path/bin/python" -W ignore -c 'import eventlet; print(eventlet.__version__)' 2>/dev/null || true)
  if [ "$have" = "$version" ]; then
    echo "lenient-peers: $path has eventlet $version" >&2
    return
  fi
  echo "lenient-peers: creating $path (eventlet $version)" >&2
  rm -rf "$path"
  "$python" -m venv "$path" >&2
  "$path/bin/pip" install --quiet --disable-pip-version-check "eventlet==$version" >&2
  have=$("$path/bin/python" -W ignore -c 'import eventlet; print(eventlet.__version__)')
  [ "$have" = "$version" ] || { echo "lenient-peers: $path has eventlet $have, not $version" >&2; exit 1; }
}

venv eventlet-0.36.1 0.36.1
venv eventlet-fixed "$fixed"

# The IMDSv2 clients of bins/tests/tokens.rs: botocore's and ec2-metadata's real token flows.
clients=$dir/imds-clients
if "$clients/bin/python" -c 'import botocore, ec2_metadata' 2>/dev/null; then
  echo "lenient-peers: $clients has botocore and ec2-metadata" >&2
else
  echo "lenient-peers: creating $clients (botocore $BOTOCORE, ec2-metadata $EC2_METADATA)" >&2
  rm -rf "$clients"
  "$python" -m venv "$clients" >&2
  "$clients/bin/pip" install --quiet --disable-pip-version-check \
    "botocore==$BOTOCORE" "ec2-metadata==$EC2_METADATA" >&2
fi
"$python" -c 'import wsgiref.simple_server' || { echo "lenient-peers: $python has no wsgiref" >&2; exit 1; }

echo "export MDPROXY_EVENTLET_0_36_PYTHON=$dir/eventlet-0.36.1/bin/python"
echo "export MDPROXY_EVENTLET_FIXED_PYTHON=$dir/eventlet-fixed/bin/python"
echo "export MDPROXY_WSGIREF_PYTHON=$(command -v "$python")"
echo "export MDPROXY_IMDS_CLIENTS_PYTHON=$clients/bin/python"
