#!/usr/bin/env python3
"""Garbage collection benchmark: our `registry gc` and CNCF distribution's
`registry garbage-collect` on identical copies of one data set (10,000 blobs,
2,000 manifests in distribution's on-disk layout, a fifth of them deleted),
reporting time, peak memory and what each deleted.

    bench/gc.py [--blobs 10000] [--manifests 2000] [--registry PATH]

Needs the `docker-registry` Debian package for the comparison. The data set
is written straight to disk (both registries read this layout), so seeding
takes seconds, not an API push of 12,000 objects.
"""

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def link(path, digest):
    write(path, digest.encode())


def blob(root, data):
    hexd = hashlib.sha256(data).hexdigest()
    write(f"{root}/{V2}/blobs/sha256/{hexd[:2]}/{hexd}/data", data)
    return "sha256:" + hexd


def seed(root, blobs, manifests, rng):
    """Writes `blobs` layer/config blobs shared out over `manifests` images in
    100 repositories; deletes (untags and unlinks) every fifth image. Returns
    the digests only the deleted images referenced."""
    per = max(1, blobs // manifests)
    contents = [rng.randbytes(1024) for _ in range(blobs)]
    digests = [blob(root, c) for c in contents]
    only_deleted = set()
    kept_refs = set()
    for i in range(manifests):
        repo = f"gc/r{i % 100}"
        refs = list(range(i * per, min((i + 1) * per, blobs)))
        config, layers = refs[0], refs[1:]
        body = (
            '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[%s]}'
            % (
                OCI_MANIFEST,
                digests[config],
                ",".join(
                    '{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":1024}'
                    % digests[l]
                    for l in layers
                ),
            )
        ).encode()
        md = blob(root, body)
        base = f"{root}/{V2}/repositories/{repo}"
        for r in refs:
            h = digests[r][7:]
            link(f"{base}/_layers/sha256/{h}/link", digests[r])
        deleted = i % 5 == 0
        if deleted:
            only_deleted.update(digests[r] for r in refs)
            only_deleted.add(md)
            continue
        kept_refs.update(digests[r] for r in refs)
        kept_refs.add(md)
        h = md[7:]
        link(f"{base}/_manifests/revisions/sha256/{h}/link", md)
        link(f"{base}/_manifests/tags/t{i}/current/link", md)
        link(f"{base}/_manifests/tags/t{i}/index/sha256/{h}/link", md)
    # Everything is old: outside any grace period.
    old = time.time() - 7200
    for dirpath, _, files in os.walk(f"{root}/{V2}/blobs"):
        for f in files:
            os.utime(os.path.join(dirpath, f), (old, old))
    return only_deleted - kept_refs


def vm_hwm_kib(pid):
    """Peak resident memory of a running process (VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run(cmd, env=None):
    """Runs a command; returns (seconds, peak RSS in MiB, output). The peak
    is read from /proc while it runs (rusage of a child forked from Python
    would count Python's own memory)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while p.poll() is None:
            peak = max(peak, vm_hwm_kib(p.pid) or 0)
            time.sleep(0.005)
        elapsed = time.monotonic() - start
        out.seek(0)
        text = out.read()
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{text}")
    return elapsed, peak / 1024, text


def count_blobs(root):
    n = 0
    for _, _, files in os.walk(f"{root}/{V2}/blobs"):
        n += sum(1 for f in files if f == "data")
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blobs", type=int, default=10000)
    ap.add_argument("--manifests", type=int, default=2000)
    ap.add_argument("--registry", default="target/release/registry")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if not shutil.which("docker-registry"):
        sys.exit("bench/gc.py: install the docker-registry Debian package")
    work = args.workdir or tempfile.mkdtemp(prefix="gc-bench-")
    rng = random.Random(42)
    seed_root = os.path.join(work, "seed")
    t = time.monotonic()
    doomed = seed(seed_root, args.blobs, args.manifests, rng)
    total = count_blobs(seed_root)
    print(f"seeded {total} blobs ({args.blobs} layers/configs + {args.manifests} manifests) "
          f"in {time.monotonic() - t:.1f} s; {len(doomed)} referenced only by deleted images")

    ours_root = os.path.join(work, "ours")
    dist_root = os.path.join(work, "dist")
    shutil.copytree(seed_root, ours_root)
    shutil.copytree(seed_root, dist_root)

    env = dict(os.environ, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=ours_root, REGISTRY_LOG_LEVEL="warn")
    ours_s, ours_mb, ours_out = run([args.registry, "gc", "--grace", "0s"], env)
    ours_left = count_blobs(ours_root)

    cfg = os.path.join(work, "dist.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {dist_root}\n"
                "  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n")
    dist_s, dist_mb, _ = run(["docker-registry", "garbage-collect", cfg])
    dist_left = count_blobs(dist_root)

    print()
    print("| metric | ours (online) | distribution (offline) | ours/dist |")
    print("|---|---|---|---|")
    print(f"| GC time, {total} blobs / {args.manifests} manifests | {ours_s:.2f} s | {dist_s:.2f} s | {ours_s / dist_s:.2f}x |")
    print(f"| peak memory of the GC process | {ours_mb:.1f} MiB | {dist_mb:.1f} MiB | {ours_mb / dist_mb:.2f}x |")
    print(f"| blobs deleted | {total - ours_left} | {total - dist_left} | |")
    expected = len(doomed)
    status = "ok" if total - ours_left == expected else f"MISMATCH (expected {expected})"
    print(f"\nours deleted exactly the blobs only deleted images referenced: {status}")
    print("\nour report:\n" + ours_out.strip())
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
