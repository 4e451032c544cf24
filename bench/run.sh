#!/usr/bin/env bash
# Benchmark our registry against CNCF distribution 2.8, side by side in one
# run, same client, same data; prints both figures, the ratio ours/dist and
# pass/fail against the targets of issue 3 (no auth) and issue 5 (token auth:
# both servers trust one authd).
#
#   bench/run.sh                 # full run (1 GiB blobs, 10,000 repos, ~10 min)
#   bench/run.sh --quick         # small sizes, a sanity run (~1-2 min)
#   bench/run.sh --only push,pull,manifest-get
#   bench/run.sh --only token-manifest,token-pull
#   bench/run.sh --only ui --servers ours   # web UI first pages (issue 13)
#   bench/run.sh --servers distribution   # one server only
#   bench/run.sh --help          # every option
#
# Metrics: disk, catalog, tags-5000, ui (web UI pages, ours only), tags-list, manifest-get, small-push,
# push, push-chunked, pull, gc, mirror, token-manifest, token-pull (RSS idle and peak
# are always reported).
# Work files go to $TMPDIR/registry-bench (--workdir); the seeded catalog
# data set is cached there between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bench/run.sh: install ${missing[*]} (Debian packages) first" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

cargo build --release -p registry -p authd -p bench
target_dir=${CARGO_TARGET_DIR:-target}
E2E_NO_BUILD=1 exec "$target_dir/release/bench" "$@"
