#!/bin/sh
# Init container of a promotion pod, with verify_signature_key: the signature gate. Runs in
# cosign's -dev image (busybox in /busybox), after the login container, before the repository
# step and the copier: a refused source stops the pod before anything is written.
#
# 1. Resolve every source image to its digest, once (cosign triangulate --type digest).
# 2. Verify the signatures of exactly those digests (cosign verify; --experimental-oci11 also
#    reads OCI 1.1 referrer signatures, then falls back to cosign's sha256-<hex>.sig tags).
# 3. Hand the digests to the copier ($GATE_DIR/pinned, $GATE_DIR/Dockerfile), which copies
#    repo@sha256:... : a tag moved after the check is not what gets promoted.
#
# Every value comes from the environment:
#   VERIFY_IMAGES      the source images, one a line, in copy order
#   COSIGN_PUBLIC_KEY  the public key; cosign reads it itself (--key env://COSIGN_PUBLIC_KEY)
#   GATE_DIR           this container's only volume: auth-source.json (the source's credentials,
#                      written by login.sh; cosign reads it as $REGISTRY_AUTH_FILE); outputs:
#                      pinned ("<source> <repository>@<digest>" a line), Dockerfile (kaniko)
# The termination message says what happened: "ecr-promote gate: verified <k> of <n> source
# images; cosign verify failed: <cosign's error>" (image k+1 was refused), or
# "ecr-promote gate: could not resolve source image <ref> to a digest: <cosign's error>".
set -u
out="${GATE_DIR:-/ecr-promote/gate}"
term="${TERMINATION_LOG:-/dev/termination-log}"
cosign=cosign
[ -x /ko-app/cosign ] && cosign=/ko-app/cosign

report() {
    printf 'ecr-promote gate: %s\n' "$*" >&2
    printf 'ecr-promote gate: %s\n' "$*" > "$term" 2>/dev/null || true
}

# the last "Error: ..." line cosign printed, or its last line
cosign_error() {
    line=$(grep '^Error:' "$1" | tail -n 1)
    [ -n "$line" ] || line=$(grep -v '^ *$' "$1" | tail -n 1)
    printf '%s' "${line#Error: }" | tr -d '\r' | cut -c1-1000
}

mkdir -p "${HOME:-$out/home}" || { report "cannot write to $out"; exit 1; }
rm -f "$out/pinned" "$out/pinned.tmp" "$out/Dockerfile"
: > "$out/pinned.tmp"
n=0
set --
while read -r ref; do
    [ -n "$ref" ] || continue
    case "$ref" in
        -* | *[!A-Za-z0-9:/_.@-]*) report "refusing source image '$ref': unexpected characters"; exit 1 ;;
    esac
    if ! pinned=$("$cosign" triangulate --type digest "$ref" 2> "$out/resolve.err"); then
        report "could not resolve source image $ref to a digest: $(cosign_error "$out/resolve.err")"
        exit 1
    fi
    case "$pinned" in
        *@sha256:*) ;;
        *) report "could not resolve source image $ref to a digest: cosign answered '$pinned'"; exit 1 ;;
    esac
    n=$((n + 1))
    printf '%s %s\n' "$ref" "$pinned" >> "$out/pinned.tmp"
    set -- "$@" "$pinned"
done <<LIST
${VERIFY_IMAGES:-}
LIST
[ "$n" -gt 0 ] || { report "VERIFY_IMAGES is empty: nothing to verify"; exit 1; }

"$cosign" verify --key env://COSIGN_PUBLIC_KEY --insecure-ignore-tlog=true --experimental-oci11 \
    "$@" > /dev/null 2> "$out/verify.err"
status=$?
cat "$out/verify.err" >&2
if [ "$status" -ne 0 ]; then
    verified=$(grep -c '^Verification for ' "$out/verify.err")
    report "verified $verified of $n source images; cosign verify failed: $(cosign_error "$out/verify.err")"
    exit 1
fi
read -r _ first < "$out/pinned.tmp"
printf 'FROM %s\n' "$first" > "$out/Dockerfile"
mv "$out/pinned.tmp" "$out/pinned"
chmod 0444 "$out/pinned" "$out/Dockerfile"
printf 'ecr-promote gate: verified %s source images, pinned to their digests\n' "$n" >&2
