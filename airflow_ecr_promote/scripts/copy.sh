#!/bin/sh
# Copier container of a promotion pod (skopeo, crane or regctl): copy each image, keeping its digest,
# after comparing digests so that an image already promoted is not written again.
#
# Every value comes from the environment:
#   COPY_TOOL     skopeo | crane | regctl
#   WITH_SIGNATURES   1 (regctl): also copy, for the image and each platform manifest, cosign's
#                 sha256-<hex>.sig/.att/.sbom tags and the OCI referrers, and report what travelled
#   COPIES, COPIES_2 ... COPIES_<COPY_CHUNKS>   the copy list, read in that order (split so that
#                 no environment string nears Linux's 128 KiB limit), one copy a line:
#                 "<source ref> <destination ref>", or "<tag>" for $SOURCE_REPO:<tag> -> $DEST_REPO:<tag>
#   COPY_CHUNKS   how many COPIES variables there are (default 1)
#   SOURCE_REPO, DEST_REPO   the two repositories of the "<tag>" lines
#   ON_CONFLICT   fail | overwrite | skip: what to do when the destination tag holds another digest
#   PARALLEL      how many copies run at once (default 1)
#   RETRIES       retries of each registry call on transient errors (default 3)
#   SRC_AUTH, DEST_AUTH   skopeo auth files for the two sides; crane and regctl read
#                 $DOCKER_CONFIG/config.json
#   PINNED_SOURCES   with the signature gate: its list "<source> <repository>@<digest>", one a
#                 line; each source is copied by the digest the gate verified, never by its tag
# The report has one line per copy: "<n> <status> <dest digest|-> <source digest|-> [reason]",
# status one of copied, present (already promoted), skipped (conflict left alone), failed.
# With WITH_SIGNATURES=1 a copied or present line ends with
# "travelled tags=<tag>,... referrers=<digest>,...".
# Each line is printed to stdout as its copy ends ("ecr-promote result <line>"), and the whole
# report at the end, between the lines "ecr-promote report begin <count>" and
# "ecr-promote report end <count> sha256:<sha256 of the report>". The termination message
# (at most 4 KiB in Kubernetes, less with more containers) gets a summary line,
# "ecr-promote summary copies=N copied=N present=N skipped=N failed=N report=sha256:<...>",
# then the report itself when it fits in 1 KiB, else as many lines as fit, failures first.
# Exit code 0 when no copy failed.
set -u
term="${TERMINATION_LOG:-/dev/termination-log}"
work="${TMPDIR:-/tmp}/ecr-promote.$$"
retries="${RETRIES:-3}"
case "$retries" in "" | *[!0-9]* | ????*) retries=3 ;; esac
mkdir -p "$work" || exit 1

say() { printf 'ecr-promote copy: %s\n' "$*" >&2; }

check_ref() {
    case "$1" in
        "" | -* | *[!A-Za-z0-9:/_.@-]*) return 1 ;;
    esac
}

# ECR's texts for a repository that does not exist (NAME_UNKNOWN) and for a tag an immutable
# repository will not move (TAG_INVALID); the operator explains the reasons that quote them.
ECR_NO_REPOSITORY="The repository with name '[^']*' does not exist in the registry with id '[0-9]*'"
ECR_IMMUTABLE="The image tag '[^']*' already exists in the '[^']*' repository and cannot be overwritten because the repository is immutable[.]"

# dest_repository REF: the repository of a reference (host/repo:tag, host/repo@digest).
dest_repository() {
    r=${1#*/}
    r=${r%@*}
    echo "${r%:*}"
}

# digest_of N SIDE REF: the manifest digest of REF on stdout; exit 2 when REF does not exist,
# 3 when its repository does not exist (ECR's NAME_UNKNOWN).
digest_of() {
    case "$COPY_TOOL" in
        skopeo)
            if [ "$2" = source ]; then auth="$SRC_AUTH"; else auth="$DEST_AUTH"; fi
            if skopeo inspect --raw --retry-times "$retries" --authfile "$auth" "docker://$3" \
                > "$work/manifest.$1" 2> "$work/inspect.$1"; then
                sha256sum < "$work/manifest.$1" | sed 's/ .*//; s/^/sha256:/'
                return 0
            fi
            ;;
        crane)
            if crane digest "$3" 2> "$work/inspect.$1"; then return 0; fi
            ;;
        regctl)
            if regctl image digest "$3" 2> "$work/inspect.$1"; then return 0; fi
            ;;
        *)
            say "unknown COPY_TOOL '$COPY_TOOL'"
            return 1
            ;;
    esac
    if grep -q "$ECR_NO_REPOSITORY" "$work/inspect.$1"; then
        return 3
    fi
    if grep -qiE 'manifest unknown|manifest_unknown|not found|name unknown|name_unknown' \
        "$work/inspect.$1"; then
        return 2
    fi
    return 1
}

copy_image() {
    n=$1 src=$2 dst=$3
    case "$COPY_TOOL" in
        skopeo)
            # --debug: skopeo reports a refused manifest (TAG_INVALID) only at debug level, and
            # then fails on "Manifest list must be converted ..." (containers/image takes
            # TAG_INVALID for a manifest type the registry rejects and tries another type).
            skopeo copy --debug --all --preserve-digests --retry-times "$retries" \
                --src-authfile "$SRC_AUTH" --dest-authfile "$DEST_AUTH" \
                --digestfile "$work/digest.$n" "docker://$src" "docker://$dst" \
                > /dev/null 2> "$work/copy.$n" && cat "$work/digest.$n"
            ;;
        crane)
            crane copy "$src" "$dst" > /dev/null 2> "$work/copy.$n" && crane digest "$dst" 2>> "$work/copy.$n"
            ;;
        regctl)
            # --referrers: OCI referrers; --digest-tags: cosign's sha256-<hex>.* tags; both for the
            # index and every platform manifest. Existing manifests are not written again.
            if [ "${WITH_SIGNATURES:-0}" = 1 ]; then set -- --referrers --digest-tags; else set --; fi
            regctl image copy "$@" "$src" "$dst" > /dev/null 2> "$work/copy.$n" &&
                regctl image digest "$dst" 2>> "$work/copy.$n"
            ;;
    esac
}

# travelled N DST DIGEST: " travelled tags=... referrers=..." for DIGEST and each of its platform
# manifests, as the destination holds them after the copy (regctl).
travelled() {
    repo=${2%@*}
    repo=${repo%:*}
    {
        echo "$3"
        regctl manifest get "$repo@$3" \
            --format '{{if .IsList}}{{range .GetManifestList}}{{println .Digest}}{{end}}{{end}}'
    } > "$work/digests.$1" 2>> "$work/copy.$1" || return 1
    regctl tag ls "$repo" > "$work/tags.$1" 2>> "$work/copy.$1" || return 1
    tags="" refs=""
    while read -r d; do
        [ -n "$d" ] || continue
        for t in $(grep "^sha256-${d#sha256:}" "$work/tags.$1"); do tags="$tags,$t"; done
        regctl artifact list "$repo@$d" --format '{{range .Descriptors}}{{println .Digest}}{{end}}' \
            > "$work/refs.$1" 2>> "$work/copy.$1" || return 1
        for r in $(cat "$work/refs.$1"); do refs="$refs,$r"; done
    done < "$work/digests.$1"
    printf ' travelled tags=%s referrers=%s' "${tags#,}" "${refs#,}"
}

# signed_extras N DST DIGEST: the travelled field when WITH_SIGNATURES=1, or nothing.
signed_extras() {
    [ "${WITH_SIGNATURES:-0}" = 1 ] || return 0
    travelled "$@"
}

# One line of printable ASCII (a registry's error or a refused value may hold CR, NEL or other
# separators, which must not end or forge a result line).
oneline() {
    tr '\n\r\t' '   ' | LC_ALL=C tr -cd ' -~' | sed 's/  */ /g' | cut -c1-300
}

reason() {
    grep -v 'level=debug' "$1" | oneline
}

# read_source N SRC DST_DIGEST: the source's digest into $src_digest, or its failure line written.
read_source() {
    src_digest=$(digest_of "$1" source "$2")
    case $? in
        0) return 0 ;;
        2 | 3)
            say "$2: not found"
            echo "$1 failed $3 - source $2 not found" > "$result"
            ;;
        *)
            say "$2: $(reason "$work/inspect.$1")"
            echo "$1 failed $3 - cannot read source $2: $(reason "$work/inspect.$1")" > "$result"
            ;;
    esac
    return 1
}

# promote N SRC DST: one copy, its result line written to $work/result.N. The destination is
# read first: when it has no such tag, the copy itself reads the source (one registry call
# fewer per new tag), and the source is read on its own only to explain a failed copy.
promote() {
    n=$1 src=$2 dst=$3
    result="$work/result.$n"
    for ref in "$src" "$dst"; do
        if ! check_ref "$ref"; then
            bad=$(printf '%s' "$ref" | oneline | cut -c1-120)
            say "refusing a malformed reference '$bad'"
            echo "$n failed - - refusing a malformed reference '$bad'" > "$result"
            return
        fi
    done
    src_digest=
    dst_digest=$(digest_of "$n" dest "$dst")
    case $? in
        0)
            read_source "$n" "$src" "$dst_digest" || return
            if [ "$dst_digest" = "$src_digest" ]; then
                if [ "${WITH_SIGNATURES:-0}" = 1 ]; then
                    # signatures may have been added since: copy what the destination lacks
                    if ! copy_image "$n" "$src" "$dst" > /dev/null || ! extras=$(travelled "$n" "$dst" "$dst_digest"); then
                        why=$(grep -o "$ECR_IMMUTABLE" "$work/copy.$n" | head -n 1 | oneline | sed 's/ $//')
                        [ -n "$why" ] && why="signature tag immutable: $why" || why=$(reason "$work/copy.$n")
                        say "copying the signatures and referrers of $src to $dst failed: $why"
                        echo "$n failed $dst_digest $src_digest copying signatures and referrers failed: $why" > "$result"
                        return
                    fi
                    say "$dst already holds $src_digest; signatures and referrers copied"
                    echo "$n present $dst_digest $src_digest$extras" > "$result"
                    return
                fi
                say "$dst already holds $src_digest: nothing to copy"
                echo "$n present $dst_digest $src_digest" > "$result"
                return
            fi
            case "$ON_CONFLICT" in
                overwrite) say "$dst holds $dst_digest, overwriting with $src_digest" ;;
                skip)
                    say "$dst holds $dst_digest, not $src_digest: left as it is (on_conflict=skip)"
                    echo "$n skipped $dst_digest $src_digest destination holds another digest" > "$result"
                    return
                    ;;
                *)
                    say "$dst holds $dst_digest, not $src_digest: refusing to overwrite"
                    echo "$n failed $dst_digest $src_digest destination tag holds another digest" > "$result"
                    return
                    ;;
            esac
            ;;
        2) ;;
        3)
            missing=$(grep -o "$ECR_NO_REPOSITORY" "$work/inspect.$n" | head -n 1 | oneline | sed 's/ $//')
            say "$dst: $missing"
            echo "$n failed - - destination repository missing: $missing" > "$result"
            return
            ;;
        *)
            say "$dst: $(reason "$work/inspect.$n")"
            echo "$n failed - - cannot read destination $dst: $(reason "$work/inspect.$n")" > "$result"
            return
            ;;
    esac
    say "copying $src to $dst"
    if new_digest=$(copy_image "$n" "$src" "$dst"); then
        :
    elif immutable=$(grep -o "$ECR_IMMUTABLE" "$work/copy.$n" | head -n 1 | oneline | sed 's/ $//') && [ -n "$immutable" ]; then
        say "copy to $dst refused: $immutable"
        echo "$n failed ${dst_digest:--} ${src_digest:--} destination tag immutable: $immutable" > "$result"
        return
    # regctl reads the destination with HEAD, whose 404 has no body: ECR's NAME_UNKNOWN text first
    # reaches it on the copy's first upload
    elif missing=$(grep -o "$ECR_NO_REPOSITORY" "$work/copy.$n" | grep -F "name '$(dest_repository "$dst")'" |
        head -n 1 | oneline | sed 's/ $//') && [ -n "$missing" ]; then
        say "$dst: $missing"
        echo "$n failed - - destination repository missing: $missing" > "$result"
        return
    elif [ -z "$src_digest" ] && ! read_source "$n" "$src" -; then
        return
    # Twice more: copies of one digest under several tags, running at once, can race on the
    # destination's shared manifests (distribution refuses a manifest list whose platform
    # manifests are still being written, and skopeo then fails to convert it).
    elif ! new_digest=$(sleep 1 && copy_image "$n" "$src" "$dst") &&
        ! new_digest=$(sleep 3 && copy_image "$n" "$src" "$dst"); then
        say "copy to $dst failed: $(reason "$work/copy.$n")"
        echo "$n failed - ${src_digest:--} copy failed: $(reason "$work/copy.$n")" > "$result"
        return
    fi
    if ! extras=$(signed_extras "$n" "$dst" "$new_digest"); then
        say "listing what travelled with $dst failed: $(reason "$work/copy.$n")"
        echo "$n failed $new_digest ${src_digest:-$new_digest} copied, but listing its signatures and referrers failed: $(reason "$work/copy.$n")" > "$result"
        return
    fi
    # the copy keeps the digest (skopeo --preserve-digests, crane, regctl), so it is the source's
    say "copied $dst: $new_digest"
    echo "$n copied $new_digest ${src_digest:-$new_digest}$extras" > "$result"
}

parallel="${PARALLEL:-1}"
case "$parallel" in "" | *[!0-9]* | ???*) parallel=1 ;; esac
# "00" passes the check above, and as a count of workers it would start none; "08" is not octal.
while :; do case "$parallel" in 0?*) parallel=${parallel#0} ;; *) break ;; esac; done
[ "$parallel" != 0 ] || parallel=1
chunks="${COPY_CHUNKS:-1}"
case "$chunks" in "" | *[!0-9]* | 0 | ?????*)
    bad=$(printf '%s' "$chunks" | oneline | cut -c1-40)
    say "refusing COPY_CHUNKS '$bad': expected a number of COPIES variables"
    rm -rf "$work"
    exit 1
    ;;
esac
{
    printf '%s\n' "${COPIES:-}"
    i=2
    while [ "$i" -le "$chunks" ]; do
        # $i is a number, so eval sees only the name COPIES_<number>, never a value.
        eval "printf '%s\n' \"\${COPIES_$i:-}\""
        i=$((i + 1))
    done
} > "$work/copies"
expand=0
if check_ref "${SOURCE_REPO:-}" && check_ref "${DEST_REPO:-}"; then expand=1; fi
: > "$work/list"
while read -r src dst; do
    [ -n "$src" ] || continue
    if [ -z "$dst" ] && [ "$expand" = 1 ]; then
        dst="$DEST_REPO:$src"
        src="$SOURCE_REPO:$src"
    fi
    printf '%s %s\n' "$src" "$dst" >> "$work/list"
done < "$work/copies"
if [ -n "${PINNED_SOURCES:-}" ]; then
    # the gate verified these digests: copy them, not what the tags name by now; a source the gate
    # did not pin is not copied at all
    if ! awk 'NR == FNR { pin[$1] = $2; next }
        !($1 in pin) { print "no digest pinned by the signature gate for " $1 > "/dev/stderr"; exit 1 }
        { print pin[$1], $2 }' "$PINNED_SOURCES" "$work/list" > "$work/list.pinned"; then
        say "refusing to copy: the signature gate's list $PINNED_SOURCES does not cover every source"
        rm -rf "$work"
        exit 1
    fi
    mv "$work/list.pinned" "$work/list"
fi
total=$(wc -l < "$work/list")
total=$((total + 0))

# run_copy N SRC DST: promote, then print the result line at once ("ecr-promote result <line>",
# one write), so that a copier killed before its report still leaves what it did in its log.
run_copy() {
    promote "$1" "$2" "$3" < /dev/null
    line=$(cat "$work/result.$1" 2>/dev/null)
    [ -z "$line" ] || printf 'ecr-promote result %s\n' "$line"
}

# worker K: copies 2+K, 2+K+PARALLEL, ... (copy 1 runs alone first: images of one batch usually
# share base layers, and copies started together would each upload a blob the destination
# does not have yet).
worker() {
    i=0
    while read -r src dst; do
        i=$((i + 1))
        [ "$i" -ge 2 ] && [ $(((i - 2) % parallel)) -eq "$1" ] || continue
        run_copy "$i" "$src" "$dst"
    done < "$work/list"
}
if [ "$total" -ge 1 ]; then
    read -r src dst < "$work/list"
    run_copy 1 "$src" "$dst"
fi
k=0
while [ "$k" -lt "$parallel" ] && [ $((k + 2)) -le "$total" ]; do
    worker "$k" &
    k=$((k + 1))
done
wait

i=1
: > "$work/results"
while [ "$i" -le "$total" ]; do
    if [ ! -s "$work/result.$i" ]; then
        echo "$i failed - - no result" > "$work/result.$i"
    fi
    cat "$work/result.$i" >> "$work/results"
    i=$((i + 1))
done
sum=$(sha256sum < "$work/results" | sed 's/ .*//')
counts=$(awk '{ c[$2]++ } END {
    printf "copied=%d present=%d skipped=%d failed=%d", c["copied"], c["present"], c["skipped"], c["failed"] }' \
    "$work/results")
failed=$(printf '%s' "$counts" | sed 's/.*failed=//')
echo "ecr-promote report begin $total"
cat "$work/results"
echo "ecr-promote report end $total sha256:$sum"
summary="ecr-promote summary copies=$total $counts report=sha256:$sum"
{
    echo "$summary"
    if [ $(($(wc -c < "$work/results") + ${#summary} + 1)) -le 1024 ]; then
        cat "$work/results"
    else
        { grep '^[0-9]* failed ' "$work/results"; grep -v '^[0-9]* failed ' "$work/results"; } |
            awk -v size=$((${#summary} + 1)) '{ size += length($0) + 1; if (size > 1024) exit; print }'
    fi
} > "$term" 2>/dev/null || true
rm -rf "$work"
if [ "$total" -eq 0 ]; then
    say "the copy list is empty: nothing to promote"
    exit 1
fi
say "$total copies, $failed failed"
[ "$failed" -eq 0 ]
