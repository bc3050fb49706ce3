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
#   RETRIES       how many times a registry call (every tool's reads and copies) is tried again
#                 after a transient failure: 5xx, 429/TOOMANYREQUESTS, a dropped connection, or
#                 the manifest-list race below (default 8); other failures are never retried
#   RETRY_DELAY   seconds before the first retry, doubled before each next one up to 60 s, of
#                 which a random half is waited (default 1): copies throttled together do not
#                 all come back together
#   LISTING_MAX_AGE   seconds a destination repository's tag listing is used for before it is
#                 taken again (default 60)
#   SRC_AUTH, DEST_AUTH   skopeo auth files for the two sides; crane and regctl read
#                 $DOCKER_CONFIG/config.json
#   LOGIN_RETRIES_FILE   the login container's count of logins it tried again (login.sh), passed
#                 on in the summary as login_retries=N (0 when the file is absent)
#   PINNED_SOURCES   with the signature gate: its list "<source> <repository>@<digest>", one a
#                 line; each source is copied by the digest the gate verified, never by its tag
# The script reports facts and leaves their meaning to the operator (airflow_ecr_promote/result.py):
# the report has one line per copy, "<n> <status> <dest digest|-> <source digest|-> [<fact>]",
# status one of copied, present (already promoted), skipped (conflict left alone), failed, and
# "retries=<k>" after the two digests when the copy's registry calls were tried again k > 0 times,
# and the fact, for a failed or skipped copy, one of:
#   conflict                        the destination tag holds another digest
#   malformed - <reference>         a reference the script refuses
#   no-result                       the copy ended without a line
#   <step> <class> <tool message>   a tool failed; step: read-dest, read-source, copy, signatures
#                                   (a present image's signatures), listing (what travelled);
#                                   class, from the registry's error code in the tool's output:
#                                   name_unknown, manifest_unknown, tag_invalid, denied,
#                                   throttled (429, TOOMANYREQUESTS), transient (5xx, a dropped
#                                   connection), other; the message: the tool's text, one line
# With WITH_SIGNATURES=1 a copied or present line ends with
# "travelled tags=<tag>,... referrers=<digest>,...".
# Each line is printed to stdout as its copy ends ("ecr-promote result <line>"), and the whole
# report at the end, between the lines "ecr-promote report begin <count>" and
# "ecr-promote report end <count> sha256:<sha256 of the report>". The termination message
# (at most 4 KiB in Kubernetes, less with more containers) gets a summary line,
# "ecr-promote summary copies=N copied=N present=N skipped=N failed=N retries=N login_retries=N
# report=sha256:<...>" (one line),
# then the report itself when it fits in 1 KiB, else as many lines as fit, failures first.
# Exit code 0 when no copy failed.
set -u
term="${TERMINATION_LOG:-/dev/termination-log}"
work="${TMPDIR:-/tmp}/ecr-promote.$$"
retries="${RETRIES:-8}"
case "$retries" in "" | *[!0-9]* | ???*) retries=8 ;; esac
retries=$((retries + 0))
delay="${RETRY_DELAY:-1}"
case "$delay" in "" | *[!0-9]* | ???*) delay=1 ;; esac
delay=$((delay + 0))
max_age="${LISTING_MAX_AGE:-60}"
case "$max_age" in "" | *[!0-9]* | ?????*) max_age=60 ;; esac
max_age=$((max_age + 0))
mkdir -p "$work" || exit 1
nl='
'
generation=0

say() { printf 'ecr-promote copy: %s\n' "$*" >&2; }

check_ref() {
    case "$1" in
        "" | -* | *[!A-Za-z0-9:/_.@-]*) return 1 ;;
    esac
}

# One line of printable ASCII (a registry's error or a refused value may hold CR, NEL or other
# separators, which must not end or forge a result line).
flatten() {
    tr '\n\r\t' '   ' | LC_ALL=C tr -cd ' -~' | sed 's/  */ /g; s/^ //; s/ $//'
}

# flatten, its first 300 characters kept
oneline() {
    flatten | cut -c1-300
}

# flatten, its last 300 characters kept: a tool's last words end with the cause (skopeo's
# "copying image 1/2 from manifest list: writing manifest: ...: <cause>"), which the first 300 cut
# off when the context before it is long
last_words() {
    words=$(flatten)
    if [ ${#words} -gt 300 ]; then
        printf '...%s\n' "$(printf '%s' "$words" | tail -c 297)"
    else
        printf '%s\n' "$words"
    fi
}

# error_class FILE: what kind of failure a tool's output reports, from the registry's error code
# (no interpretation of the registry's prose: the operator does that). crane and regctl print
# the code as the registry sends it (TAG_INVALID), skopeo in words ("tag invalid"). skopeo's
# --debug lines are read only for TAG_INVALID and the manifest-list race, which it reports at
# debug level only.
error_class() {
    grep -v 'level=debug' "$1" > "$1.plain"
    if grep -qiE 'TAG_INVALID|tag invalid' "$1"; then
        echo tag_invalid
    elif grep -qiE 'NAME_UNKNOWN|name unknown' "$1.plain"; then
        echo name_unknown
    elif grep -qiE 'DENIED|UNAUTHORIZED|AccessDenied' "$1.plain"; then
        echo denied
    elif grep -qiE 'TOOMANYREQUESTS|too many requests|status( code)?:? *429|registry 429|429 \(?Too Many Requests' "$1.plain" ||
        { grep -qiE 'must be converted' "$1.plain" && grep -qiE 'TOOMANYREQUESTS|too many requests' "$1"; }; then
        # skopeo reports a throttled manifest upload at debug level only, then fails converting
        echo throttled
    elif grep -qiE 'status( code)?:? *5[0-9][0-9]|registry 5[0-9][0-9]|5[0-9][0-9] \(?(Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout)|connection reset|broken pipe|i/o timeout|unexpected EOF|: EOF("|$|[[:space:]])|TLS handshake timeout|connection refused' "$1.plain" ||
        grep -qiE 'MANIFEST_BLOB_UNKNOWN|manifest blob unknown|must be converted' "$1"; then
        # (": EOF": Go's net/http when the server closes the connection before answering, e.g.
        # skopeo's 'writing blob: Head "https://...": EOF', seen with 16 pods copying at once)
        # the manifest-list race: copies of one digest under several tags, running at once, race
        # on the destination's shared manifests (distribution refuses a manifest list whose
        # platform manifests are still being written, and skopeo then fails to convert it)
        echo transient
    elif grep -qiE 'MANIFEST_UNKNOWN|manifest unknown|not found' "$1.plain"; then
        echo manifest_unknown
    else
        echo other
    fi
}

# message_of CLASS FILE: the tool's own words, one line: from the registry's error code on for a
# refusal that carries one (for an IAM refusal, ECR's "User: <arn> is not authorized to perform:
# <action> on resource: <ARN> ...", which crane and regctl print after lines that would fill the
# 300 characters kept), else the tool's last words, their last 300 characters (skopeo's debug
# lines left out)
message_of() {
    case "$1" in
        tag_invalid) words=$(grep -oiE '(TAG_INVALID|tag invalid).*' "$2" | head -n 1 | sed 's/" *$//' | oneline) ;;
        name_unknown) words=$(grep -oiE '(NAME_UNKNOWN|name unknown).*' "$2" | head -n 1 | sed 's/" *$//' | oneline) ;;
        denied) words=$(grep -v 'level=debug' "$2" | grep -oE 'User: [^ ]+ is not authorized to perform: .*' |
            head -n 1 | sed 's/[\\]*".*//' | oneline) ;;
        *) words= ;;
    esac
    [ -n "$words" ] || words=$(grep -v 'level=debug' "$2" | last_words)
    printf '%s\n' "$words"
}

# retryable CLASS: whether a failure of that class is tried again
retryable() {
    [ "$1" = transient ] || [ "$1" = throttled ]
}

# backoff N K: note one more retry of copy N, then wait before its K-th retry: RETRY_DELAY, twice
# as long each time (at most 60 s), of which a random half ("equal jitter": copies throttled at
# the same moment spread out instead of coming back together)
backoff() {
    echo x >> "$work/retries.$1"
    wait_ms=$((delay * 1000)) k=1
    while [ "$k" -lt "$2" ] && [ "$wait_ms" -lt 60000 ]; do wait_ms=$((wait_ms * 2)) k=$((k + 1)); done
    [ "$wait_ms" -le 60000 ] || wait_ms=60000
    random=$(od -An -N2 -tu2 /dev/urandom 2> /dev/null | tr -cd '0-9')
    wait_ms=$((wait_ms / 2 + ${random:-0} % (wait_ms / 2 + 1)))
    wait_s=$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))
    # a sleep without fractions (some busybox builds) waits the whole seconds, one more
    sleep "$wait_s" 2> /dev/null || sleep $((wait_ms / 1000 + 1))
}

# tool_digest N SIDE REF: the manifest digest of REF on stdout, the tool's errors in inspect.N
tool_digest() {
    case "$COPY_TOOL" in
        skopeo)
            if [ "$2" = source ]; then auth="$SRC_AUTH"; else auth="$DEST_AUTH"; fi
            skopeo inspect --raw --authfile "$auth" "docker://$3" \
                > "$work/manifest.$1" 2> "$work/inspect.$1" || return 1
            set -- $(sha256sum < "$work/manifest.$1")
            printf 'sha256:%s\n' "$1"
            ;;
        crane) crane digest "$3" 2> "$work/inspect.$1" ;;
        regctl) regctl image digest "$3" 2> "$work/inspect.$1" ;;
        *)
            say "unknown COPY_TOOL '$COPY_TOOL'"
            echo "unknown COPY_TOOL '$COPY_TOOL'" > "$work/inspect.$1"
            return 1
            ;;
    esac
}

# digest_of N SIDE REF: the manifest digest of REF on stdout, a transient failure tried again
# RETRIES times; on failure the class goes to class.N (manifest_unknown: REF does not exist)
digest_of() {
    read_try=0
    while ! tool_digest "$@"; do
        error_class "$work/inspect.$1" > "$work/class.$1"
        if ! retryable "$(cat "$work/class.$1")" || [ "$read_try" -ge "$retries" ]; then
            return 1
        fi
        read_try=$((read_try + 1))
        say "reading $3 failed ($(message_of transient "$work/inspect.$1")): trying again"
        backoff "$1" "$read_try"
    done
}

# copy_image N SRC DST: copy SRC to DST, the copy's digest into $new_digest (a variable, not
# stdout: no subshell per copy)
copy_image() {
    n=$1 src=$2 dst=$3 new_digest=
    case "$COPY_TOOL" in
        skopeo)
            # --debug: skopeo reports a refused manifest (TAG_INVALID) only at debug level, and
            # then fails on "Manifest list must be converted ..." (containers/image takes
            # TAG_INVALID for a manifest type the registry rejects and tries another type).
            # No --retry-times: this script retries throttled and transient failures itself, for
            # every tool, counts them, and reads the destination again before each new attempt;
            # skopeo's own retries would multiply with these, and they miss a TOOMANYREQUESTS
            # answer to a manifest upload (containers/common issue 2494).
            skopeo copy --debug --all --preserve-digests \
                --src-authfile "$SRC_AUTH" --dest-authfile "$DEST_AUTH" \
                --digestfile "$work/digest.$n" "docker://$src" "docker://$dst" \
                > /dev/null 2> "$work/copy.$n" || return 1
            IFS= read -r new_digest < "$work/digest.$n" || [ -n "$new_digest" ]
            ;;
        crane)
            crane copy "$src" "$dst" > /dev/null 2> "$work/copy.$n" &&
                new_digest=$(crane digest "$dst" 2>> "$work/copy.$n")
            ;;
        regctl)
            # --referrers: OCI referrers; --digest-tags: cosign's sha256-<hex>.* tags; both for the
            # index and every platform manifest. Existing manifests are not written again.
            if [ "${WITH_SIGNATURES:-0}" = 1 ]; then set -- --referrers --digest-tags; else set --; fi
            regctl image copy "$@" "$src" "$dst" > /dev/null 2> "$work/copy.$n" &&
                new_digest=$(regctl image digest "$dst" 2>> "$work/copy.$n")
            ;;
    esac
}

# tags_of REPO: the tags of REPO, listed once per pod (a repository's list is as long as its
# history; listing it for every copy made a batch cost copies x tags). Copies running at once
# wait for the one that lists.
tags_of() {
    hash=$(printf '%s' "$1" | sha256sum | cut -c1-32)
    # the destination's listing taken before the copies (dest_lacks), when there is one
    if cat "$work/dest-$hash" 2> /dev/null; then return 0; fi
    list="$work/tags-$hash"
    until mkdir "$list.lock" 2> /dev/null; do sleep 1; done
    [ -f "$list" ] || regctl tag ls "$1" > "$list" || rm -f "$list"
    rm -rf "$list.lock"
    cat "$list" 2> /dev/null
}

# listed_tags REPO OUT: the destination repository's tags into OUT, one a line, listed by the
# copy tool (every page of them).
listed_tags() {
    case "$COPY_TOOL" in
        skopeo)
            skopeo list-tags --authfile "$DEST_AUTH" "docker://$1" > "$2.json" || return 1
            sed -n '/"Tags"/,/]/p' "$2.json" | sed '1d; $d; s/[", ]//g' > "$2"
            ;;
        crane) crane ls "$1" > "$2" ;;
        regctl) regctl tag ls "$1" > "$2" ;;
        *) return 1 ;;
    esac
}

# dest_lacks N DST K: true when DST's repository, listed once for the copies of this pod that go
# to it, has no such tag: a new tag is then copied without reading the destination first (one
# registry call and one tool start fewer per new tag). K numbers the repository among those with
# more than one copy in this pod (0: it has one, and is read instead). A listing older than
# LISTING_MAX_AGE seconds (default 60) is taken again, so a tag written meanwhile by someone else
# is read and ON_CONFLICT applies to it: the ticker below starts a new generation of listings
# every LISTING_MAX_AGE seconds. False when the repository is not listed (no such repository yet:
# the read says so), or DST is not a tag. A copy that finds the listing it holds current runs no
# program here: this is every new tag's path, and each program started costs a batch of 1,000
# tags seconds.
dest_lacks() {
    [ "$3" != 0 ] || return 1
    repo=${2%:*}
    tag=${2##*:}
    case "$tag" in "" | */* | *@*) return 1 ;; esac
    [ ! -f "$work/dest-$3.failed" ] || return 1
    if [ "$max_age" = 0 ]; then
        generation="n$1"  # a listing of its own for each copy
    else
        while [ -f "$work/age.$((generation + 1))" ]; do generation=$((generation + 1)); done
    fi
    # $3 and the generation are numbers, so eval sees only names, never a value
    eval "held=\${held_$3:-}"
    if [ "$held" != "$generation" ]; then
        list="$work/dest-$3.$generation"
        until mkdir "$list.lock" 2> /dev/null; do sleep 0.1; done
        if [ ! -f "$list" ] && [ ! -f "$work/dest-$3.failed" ]; then
            if listed_tags "$repo" "$list.new" 2> "$work/listing.$1"; then
                mv "$list.new" "$list"
                # the copy of tags_of's (signatures: what travelled)
                cp "$list" "$work/dest-$(printf '%s' "$repo" | sha256sum | cut -c1-32)"
            else
                : > "$work/dest-$3.failed"
                rm -f "$list.new"
            fi
        fi
        rm -rf "$list.lock"
        [ -f "$list" ] || return 1
        eval "tags_$3=\"\$nl\$(cat \"\$list\")\$nl\" held_$3=$generation"
    fi
    eval "case \"\$tags_$3\" in *\"\$nl\$tag\$nl\"*) return 1 ;; esac"
}

# travelled N SRC DST DIGEST: " travelled tags=... referrers=..." for DIGEST and each of its
# platform manifests (regctl), as the destination holds them after the copy: cosign's tags that
# the destination held when its tags were listed, and those the copy brought from the source
# (--digest-tags copies the source's), from one listing of each repository per pod.
travelled() {
    srepo=${2%@*}
    srepo=${srepo%:*}
    repo=${3%@*}
    repo=${repo%:*}
    {
        echo "$4"
        regctl manifest get "$repo@$4" \
            --format '{{if .IsList}}{{range .GetManifestList}}{{println .Digest}}{{end}}{{end}}'
    } > "$work/digests.$1" 2>> "$work/copy.$1" || return 1
    { tags_of "$repo" && tags_of "$srepo"; } > "$work/tags.$1" 2>> "$work/copy.$1" || return 1
    tags="" refs=""
    while read -r d; do
        [ -n "$d" ] || continue
        for t in $(grep "^sha256-${d#sha256:}" "$work/tags.$1" | awk '!seen[$0]++'); do tags="$tags,$t"; done
        regctl artifact list "$repo@$d" --format '{{range .Descriptors}}{{println .Digest}}{{end}}' \
            > "$work/refs.$1" 2>> "$work/copy.$1" || return 1
        for r in $(cat "$work/refs.$1"); do refs="$refs,$r"; done
    done < "$work/digests.$1"
    printf ' travelled tags=%s referrers=%s' "${tags#,}" "${refs#,}"
}

# signed_extras N SRC DST DIGEST: the travelled field when WITH_SIGNATURES=1, or nothing.
signed_extras() {
    [ "${WITH_SIGNATURES:-0}" = 1 ] || return 0
    travelled "$@"
}

# failed N DST_DIGEST SRC_DIGEST STEP FILE: the failure line of a tool's failure (output in FILE)
failed() {
    class=$(error_class "$5")
    text=$(message_of "$class" "$5")
    say "copy $1, $4 failed ($class): $text"
    echo "$1 failed $2 $3 $4 $class $text" > "$result"
}

# read_source N SRC DST_DIGEST: the source's digest into $src_digest, or its failure line written.
read_source() {
    if src_digest=$(digest_of "$1" source "$2"); then return 0; fi
    failed "$1" "$3" - read-source "$work/inspect.$1"
    return 1
}

# read_dest N DST: the destination tag's digest into $dst_digest ("" when it has no such tag), or
# its failure line written.
read_dest() {
    if dst_digest=$(digest_of "$1" dest "$2"); then return 0; fi
    dst_digest=
    [ "$(cat "$work/class.$1")" = manifest_unknown ] && return 0
    failed "$1" - "${src_digest:--}" read-dest "$work/inspect.$1"
    return 1
}

# conflict N: the destination tag holds $dst_digest, not the source's: go on only when
# ON_CONFLICT=overwrite, else the result line is written.
conflict() {
    case "$ON_CONFLICT" in
        overwrite)
            say "$dst holds $dst_digest, overwriting with $src_digest"
            return 0
            ;;
        skip)
            say "$dst holds $dst_digest, not $src_digest: left as it is (on_conflict=skip)"
            echo "$1 skipped $dst_digest $src_digest conflict" > "$result"
            ;;
        *)
            say "$dst holds $dst_digest, not $src_digest: refusing to overwrite"
            echo "$1 failed $dst_digest $src_digest conflict" > "$result"
            ;;
    esac
    return 1
}

# promote N SRC DST K: one copy, its result line written to $work/result.N. The destination is
# read first (or found without the tag in its repository's listing, dest_lacks): when it has no
# such tag, the copy itself reads the source (one registry call
# fewer per new tag), and the source is read on its own only to explain a failed copy or to
# check the destination again before a retry.
promote() {
    n=$1 src=$2 dst=$3
    result="$work/result.$n"
    for ref in "$src" "$dst"; do
        if ! check_ref "$ref"; then
            bad=$(printf '%s' "$ref" | oneline | cut -c1-120)
            say "refusing a malformed reference '$bad'"
            echo "$n failed - - malformed - $bad" > "$result"
            return
        fi
    done
    src_digest=
    if dest_lacks "$n" "$dst" "$4"; then
        dst_digest=
    else
        read_dest "$n" "$dst" || return
    fi
    if [ -n "$dst_digest" ]; then
        read_source "$n" "$src" "$dst_digest" || return
        if [ "$dst_digest" = "$src_digest" ]; then
            if [ "${WITH_SIGNATURES:-0}" = 1 ]; then
                # signatures may have been added since: copy what the destination lacks
                if ! copy_image "$n" "$src" "$dst" || ! extras=$(travelled "$n" "$src" "$dst" "$dst_digest"); then
                    failed "$n" "$dst_digest" "$src_digest" signatures "$work/copy.$n"
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
        conflict "$n" || return
    fi
    copy_try=0
    while :; do
        say "copying $src to $dst"
        if copy_image "$n" "$src" "$dst"; then
            break
        fi
        if ! retryable "$(error_class "$work/copy.$n")" || [ "$copy_try" -ge "$retries" ]; then
            # a new tag's source was not read: read it now, so that a missing source says so
            if [ -z "$src_digest" ] && ! read_source "$n" "$src" "${dst_digest:--}"; then
                return
            fi
            failed "$n" "${dst_digest:--}" "${src_digest:--}" copy "$work/copy.$n"
            return
        fi
        copy_try=$((copy_try + 1))
        say "copy to $dst failed ($(message_of transient "$work/copy.$n")): trying again"
        backoff "$n" "$copy_try"
        # Someone may have written the tag since: read the destination again, and apply
        # ON_CONFLICT to what it holds now, before writing anything.
        if [ -z "$src_digest" ]; then
            read_source "$n" "$src" "${dst_digest:--}" || return
        fi
        read_dest "$n" "$dst" || return
        if [ -n "$dst_digest" ] && [ "$dst_digest" != "$src_digest" ]; then
            conflict "$n" || return
        fi
    done
    if ! extras=$(signed_extras "$n" "$src" "$dst" "$new_digest"); then
        failed "$n" "$new_digest" "${src_digest:-$new_digest}" listing "$work/copy.$n"
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
# Each copy's line gets a first field: its destination repository's number among those with more
# than one copy in this pod (listed once, dest_lacks), or 0. The rest of the line stays as it is
# (a reference with spaces in it is refused whole, by promote).
awk 'function repo_of(ref) { sub(/:[^:\/]*$/, "", ref); return ref }
    NR == FNR { n[repo_of($2)]++; next }
    { r = repo_of($2); if (n[r] > 1 && !(r in k)) k[r] = ++repos; print (n[r] > 1 ? k[r] : 0), $0 }' \
    "$work/list" "$work/list" > "$work/list.numbered" && mv "$work/list.numbered" "$work/list" || exit 1
# A new generation of destination listings every LISTING_MAX_AGE seconds (dest_lacks).
ticker=
if [ "$max_age" -gt 0 ] && awk '$1 != 0 { found = 1; exit } END { exit !found }' "$work/list"; then
    (
        g=0
        while sleep "$max_age"; do
            g=$((g + 1))
            : > "$work/age.$g"
        done
    ) < /dev/null > /dev/null 2>&1 &
    ticker=$!
fi

# run_copy N SRC DST K: promote, then print the result line at once ("ecr-promote result <line>",
# one write), so that a copier killed before its report still leaves what it did in its log.
# A copy tried again says how many times: "retries=<k>" after its two digests.
run_copy() {
    promote "$1" "$2" "$3" "$4" < /dev/null
    if [ -f "$work/retries.$1" ] && [ -s "$work/result.$1" ]; then
        tried=$(wc -l < "$work/retries.$1")
        tried=$((tried + 0))
        sed "1s/^\([^ ]* [^ ]* [^ ]* [^ ]*\)/\1 retries=$tried/" "$work/result.$1" > "$work/result.$1.new" &&
            mv "$work/result.$1.new" "$work/result.$1"
    fi
    line=
    [ ! -s "$work/result.$1" ] || IFS= read -r line < "$work/result.$1"
    [ -z "$line" ] || printf 'ecr-promote result %s\n' "$line"
}

# worker K: copies 2+K, 2+K+PARALLEL, ... (copy 1 runs alone first: images of one batch usually
# share base layers, and copies started together would each upload a blob the destination
# does not have yet).
worker() {
    i=0
    while read -r repo_no src dst; do
        i=$((i + 1))
        [ "$i" -ge 2 ] && [ $(((i - 2) % parallel)) -eq "$1" ] || continue
        run_copy "$i" "$src" "$dst" "$repo_no"
    done < "$work/list"
}
if [ "$total" -ge 1 ]; then
    read -r repo_no src dst < "$work/list"
    run_copy 1 "$src" "$dst" "$repo_no"
fi
k=0 workers=
while [ "$k" -lt "$parallel" ] && [ $((k + 2)) -le "$total" ]; do
    worker "$k" &
    workers="$workers $!"
    k=$((k + 1))
done
[ -z "$workers" ] || wait $workers
[ -z "$ticker" ] || kill "$ticker" 2> /dev/null

# the report, in the list's order (one line a copy, read without starting a program per copy)
i=1
while [ "$i" -le "$total" ]; do
    line=
    [ ! -s "$work/result.$i" ] || IFS= read -r line < "$work/result.$i"
    [ -n "$line" ] || line="$i failed - - no-result"
    printf '%s\n' "$line"
    i=$((i + 1))
done > "$work/results"
sum=$(sha256sum < "$work/results" | sed 's/ .*//')
counts=$(awk '{ c[$2]++; if ($5 ~ /^retries=[0-9]+$/) r += substr($5, 9) } END {
    printf "copied=%d present=%d skipped=%d failed=%d retries=%d", c["copied"], c["present"], c["skipped"],
        c["failed"], r }' "$work/results")
failed=$(printf '%s' "$counts" | sed 's/.*failed=//; s/ .*//')
echo "ecr-promote report begin $total"
cat "$work/results"
echo "ecr-promote report end $total sha256:$sum"
login_retries=$(cat "${LOGIN_RETRIES_FILE:-/nonexistent}" 2> /dev/null | tr -cd '0-9' | cut -c1-6)
login_retries=$((${login_retries:-0} + 0))
summary="ecr-promote summary copies=$total $counts login_retries=$login_retries report=sha256:$sum"
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
say "$total copies, $failed failed, $(printf '%s' "$counts" | sed 's/.*retries=//') retries"
[ "$failed" -eq 0 ]
