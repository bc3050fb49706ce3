#!/bin/sh
# Init container of a promotion pod: log in to every registry of the promotion and write Docker
# auth files on the shared in-memory volume. Needs only sh, the aws CLI and coreutils.
#
# Every value comes from the environment, never from text pasted into this script:
#   LOGINS             one line per login: "<host> <region> <role ARN or -> <sides>"
#                      (sides: source, dest or source,dest)
#   ROLE_SESSION_NAME  the session name of every role assumed (shows in CloudTrail)
#   WRITE_CONFIG       1: also write config.json with every host (engines that read one file)
#   SOURCE_IMAGE       if set, write a Dockerfile "FROM $SOURCE_IMAGE" (kaniko)
#   AUTH_DIR           the shared volume (default /work)
#   GATE_DIR           if set, the signature gate's own volume: it gets auth-source.json too, and
#                      nothing else (the gate must not see the destination's credentials)
#   AWS_RETRY_MODE, AWS_MAX_ATTEMPTS   the AWS CLI's retries of each call (default standard and
#                      10: exponential backoff with jitter on throttling and 5xx answers)
#   CHECK_SOURCES      engines that cannot carry OCI artifacts (kaniko): one line per source,
#                      "<login n> <registry id> <region> <repository> <imageTag=..|imageDigest=..>";
#                      after the logins, each source's manifest is read through the ECR API
#                      (ecr:BatchGetImage) as login n's identity, and a source that is not a
#                      container image (a Helm chart, another OCI artifact, or unreadable) fails
#                      the pod before any auth file exists: nothing is written anywhere
#   ENGINE, ARTIFACT_FIX   the engine's name and the fix the refusal names (with CHECK_SOURCES)
#   LOGIN_RETRIES      how many more times a login is tried when AWS throttled it and the CLI did
#                      not retry (ECR's ThrottleException is not among the CLI's throttling codes;
#                      default 6), waiting 1, 2, 4 ... s, a random half of each
# Outputs in AUTH_DIR: auth-source.json, auth-dest.json, [config.json], [Dockerfile],
# login-retries (how many times this script tried a login again).
# On failure the reason goes to stderr and to the termination message, and the exit code is 1.
set -u
umask 077
out="${AUTH_DIR:-/work}"
term="${TERMINATION_LOG:-/dev/termination-log}"
export AWS_PAGER=""
export AWS_RETRY_MODE="${AWS_RETRY_MODE:-standard}" AWS_MAX_ATTEMPTS="${AWS_MAX_ATTEMPTS:-10}"
login_retries="${LOGIN_RETRIES:-6}"
case "$login_retries" in "" | *[!0-9]* | ???*) login_retries=6 ;; esac

fail() {
    printf 'ecr-promote login: %s\n' "$*" >&2
    printf 'ecr-promote login: %s\n' "$*" > "$term" 2>/dev/null || true
    rm -f "$out"/.pw-* "$out"/.err-* "$out"/.host-* "$out"/.retries-* "$out"/.aws-config "$out"/.manifest
    rm -rf "$out"/.home-*
    exit 1
}

# The values were validated before the pod was built; refuse anything else all the same.
check() {
    case "$2" in
        "" | *[!A-Za-z0-9:/_+=,.@-]*) fail "refusing $1 value '$2': unexpected characters" ;;
    esac
}

last_error() {
    tr '\n' ' ' < "$1" | sed 's/^ *//; s/  */ /g' | cut -c1-600
}

# The pod's own identity as the CLI's config names it: where a role profile's base credentials
# come from. One `aws ecr get-login-password --profile` per role then assumes the role and gets
# the password in one CLI start (the CLI's assume-role provider), instead of `sts assume-role`
# followed by a second start.
base_source() {
    if [ -n "${AWS_WEB_IDENTITY_TOKEN_FILE:-}" ] && [ -n "${AWS_ROLE_ARN:-}" ]; then
        echo web-identity  # IRSA
    elif [ -n "${AWS_CONTAINER_CREDENTIALS_FULL_URI:-}${AWS_CONTAINER_CREDENTIALS_RELATIVE_URI:-}" ]; then
        echo EcsContainer  # EKS Pod Identity (and ECS task roles)
    elif [ -n "${AWS_ACCESS_KEY_ID:-}" ]; then
        echo Environment  # static keys
    else
        echo Ec2InstanceMetadata  # the node's instance profile
    fi
}

# write_aws_config FILE: a profile "ecr-promote-N" for each login N with a role.
write_aws_config() {
    source=$(base_source)
    {
        if [ "$source" = web-identity ]; then
            check AWS_ROLE_ARN "$AWS_ROLE_ARN"
            check AWS_WEB_IDENTITY_TOKEN_FILE "$AWS_WEB_IDENTITY_TOKEN_FILE"
            printf '[profile ecr-promote-base]\nrole_arn = %s\nweb_identity_token_file = %s\n' \
                "$AWS_ROLE_ARN" "$AWS_WEB_IDENTITY_TOKEN_FILE"
            printf 'role_session_name = %s\n' "$ROLE_SESSION_NAME"
        fi
        i=0
        while read -r host region role sides; do
            [ -n "$host" ] || continue
            i=$((i + 1))
            [ "$role" != "-" ] || continue
            printf '[profile ecr-promote-%s]\nrole_arn = %s\nrole_session_name = %s\nregion = %s\n' \
                "$i" "$role" "$ROLE_SESSION_NAME" "$region"
            if [ "$source" = web-identity ]; then
                printf 'source_profile = ecr-promote-base\n'
            else
                printf 'credential_source = %s\n' "$source"
            fi
        done <<LINES
$LOGINS
LINES
    } > "$1"
}

# throttled FILE: whether the CLI's error is AWS throttling that the CLI did not retry itself
# (ECR's ThrottleException; the CLI retries Throttling and ThrottlingException, and then says
# "reached max retries")
throttled() {
    grep -qE 'Throttl|TooManyRequests|Rate exceeded' "$1" && ! grep -q 'reached max retries' "$1"
}

# pause K: wait before the K-th retry: 1, 2, 4 ... s (at most 60), of which a random half, so that
# logins throttled together do not all come back together
pause() {
    wait_ms=1000 k=1
    while [ "$k" -lt "$1" ] && [ "$wait_ms" -lt 60000 ]; do wait_ms=$((wait_ms * 2)) k=$((k + 1)); done
    random=$(od -An -N2 -tu2 /dev/urandom 2> /dev/null | tr -cd '0-9')
    wait_ms=$((wait_ms / 2 + ${random:-0} % (wait_ms / 2 + 1)))
    sleep "$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))" 2> /dev/null || sleep $((wait_ms / 1000 + 1))
}

# aws_as N ROLE ARGS...: the aws CLI as login N's identity: its role's profile, in a config of our
# own (the pod's AWS_PROFILE plays no part) and a HOME of its own on the in-memory volume (the CLI
# caches the role's credentials in ~/.aws/cli/cache, and logins running at once race to create
# it); ROLE "-": the pod's own identity
aws_as() {
    as_n=$1 as_role=$2
    shift 2
    if [ "$as_role" != "-" ]; then
        env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE AWS_CONFIG_FILE="$out/.aws-config" \
            HOME="$out/.home-$as_n" aws --profile "ecr-promote-$as_n" "$@"
    else
        aws "$@"
    fi
}

# login N HOST REGION ROLE: writes the ECR password to $out/.pw-N, or a reason to $out/.err-N.
login() {
    n=$1 host=$2 region=$3 role=$4
    if [ "$role" != "-" ]; then
        if ! mkdir -p "$out/.home-$n" 2> "$out/.err-$n"; then
            printf 'cannot create %s for role %s: %s\n' "$out/.home-$n" "$role" "$(last_error "$out/.err-$n")" \
                > "$out/.err-$n"
            return 1
        fi
        who="role $role"
    else
        who="the pod's own identity"
    fi
    set -- aws_as "$n" "$role"
    try=0
    while :; do
        if "$@" ecr get-login-password --region "$region" > "$out/.pw-$n" 2> "$out/.err-$n"; then
            status=0
            break
        fi
        status=1
        throttled "$out/.err-$n" && [ "$try" -lt "$login_retries" ] || break
        try=$((try + 1))
        echo x >> "$out/.retries-$n"
        printf 'ecr-promote login: throttled logging in to %s as %s: %s; trying again\n' \
            "$host" "$who" "$(last_error "$out/.err-$n")" >&2
        pause "$try"
    done
    if [ "$status" -ne 0 ]; then
        err=$(last_error "$out/.err-$n")
        [ "$try" -eq 0 ] || err="$err (tried $((try + 1)) times)"
        case "$role:$err" in
            -:*) printf 'cannot get an ECR login password for registry %s in %s as %s: %s\n' \
                "$host" "$region" "$who" "$err" ;;
            *AssumeRole*) printf 'cannot assume role %s for registry %s: %s\n' "$role" "$host" "$err" ;;
            *GetAuthorizationToken*) printf 'cannot get an ECR login password for registry %s in %s as %s: %s\n' \
                "$host" "$region" "$who" "$err" ;;
            *) printf 'cannot assume role %s or get an ECR login password for registry %s in %s: %s\n' \
                "$role" "$host" "$region" "$err" ;;
        esac > "$out/.err-$n"
        return 1
    fi
    if [ ! -s "$out/.pw-$n" ]; then
        printf 'empty ECR login password for registry %s as %s\n' "$host" "$who" > "$out/.err-$n"
        return 1
    fi
    printf 'ecr-promote login: got a password for %s (%s) as %s\n' "$host" "$region" "$who" >&2
}

[ -n "${LOGINS:-}" ] || fail "LOGINS is empty: nothing to log in to"
check ROLE_SESSION_NAME "${ROLE_SESSION_NAME:-}"

# Check every line before any login starts: a refusal must not leave a login running.
while read -r host region role sides; do
    [ -n "$host" ] || continue
    check host "$host"
    check region "$region"
    check role "$role"
    check sides "$sides"
done <<EOF
$LOGINS
EOF

write_aws_config "$out/.aws-config" || fail "cannot write $out/.aws-config"

# Start every login at once (they are independent network round trips), then wait for each.
n=0
pids=""
while read -r host region role sides; do
    [ -n "$host" ] || continue
    n=$((n + 1))
    printf '%s %s\n' "$host" "$sides" > "$out/.host-$n"
    (login "$n" "$host" "$region" "$role") &
    pids="$pids $!"
done <<EOF
$LOGINS
EOF

i=0
errors=""
for pid in $pids; do
    i=$((i + 1))
    if ! wait "$pid"; then
        errors="$errors$(cat "$out/.err-$i" 2>/dev/null || echo "login $i failed"); "
    fi
done
[ -z "$errors" ] || fail "${errors%; }"

# manifest_kind FILE: what the manifest in FILE holds: "image", "index", "helm-chart <type>",
# "artifact <type>" or "unknown", decided as airflow_ecr_promote/artifacts.py classify() does
# (keep them in step), without a JSON parser (the aws CLI image has none): whitespace removed, the
# keys found by their quoted names (a quote inside a JSON string is escaped, so a value cannot
# fake one). An artifactType anywhere, or no image config found, is not an image: fail closed.
manifest_kind() {
    compact=$(tr -d ' \t\r\n' < "$1")
    helm=application/vnd.cncf.helm.config.v1+json
    type=$(printf '%s' "$compact" | sed -n 's/.*"artifactType":"\([^"]*\)".*/\1/p' | LC_ALL=C tr -cd 'A-Za-z0-9.+/_-')
    if [ -n "$type" ]; then
        if [ "$type" = "$helm" ]; then echo "helm-chart $type"; else echo "artifact $type"; fi
        return
    fi
    case "$compact" in
        *'"schemaVersion":1'[,}]*) echo image && return ;;
        *'"manifests":['*) echo index && return ;;
    esac
    type=$(printf '%s' "$compact" | sed -n 's/.*"config":{\([^}]*\)}.*/\1/p' |
        sed -n 's/.*"mediaType":"\([^"]*\)".*/\1/p' | LC_ALL=C tr -cd 'A-Za-z0-9.+/_-')
    case "$type" in
        application/vnd.oci.image.config.v1+json | application/vnd.docker.container.image.v1+json) echo image ;;
        "") echo unknown ;;
        "$helm") echo "helm-chart $type" ;;
        *) echo "artifact $type" ;;
    esac
}

# login_role N: the role of the N-th login of LOGINS ("-": the pod's own identity), numbered as
# the logins are (sh and coreutils only: the aws CLI image may have no awk)
login_role() {
    k=0
    while read -r host region role sides; do
        [ -n "$host" ] || continue
        k=$((k + 1))
        if [ "$k" = "$1" ]; then
            printf '%s\n' "$role"
            return
        fi
    done <<LINES
$LOGINS
LINES
}

# check_sources: for each line of CHECK_SOURCES, the source's manifest read through the ECR API as
# its login's identity; a source that is not a container image fails the pod (fail closed: one
# that cannot be read fails it too). Its variables are its own: n, the number of logins, is used
# after it.
check_sources() {
    while read -r source_n registry region repository image_id; do
        [ -n "$source_n" ] || continue
        case "$source_n" in *[!0-9]* | ????*) fail "refusing CHECK_SOURCES login number '$source_n'" ;; esac
        check "source registry" "$registry"
        check "source region" "$region"
        check "source repository" "$repository"
        check "source image id" "$image_id"
        case "$image_id" in
            imageTag=*) shown="$repository:${image_id#imageTag=}" ;;
            imageDigest=*) shown="$repository@${image_id#imageDigest=}" ;;
            *) fail "refusing source image id '$image_id'" ;;
        esac
        shown="$shown in registry $registry ($region)"
        role=$(login_role "$source_n")
        [ -n "$role" ] || fail "CHECK_SOURCES names login $source_n, which LOGINS does not have"
        if ! aws_as "$source_n" "$role" ecr batch-get-image --region "$region" --registry-id "$registry" \
            --repository-name "$repository" --image-ids "$image_id" \
            --accepted-media-types application/vnd.oci.image.index.v1+json \
            application/vnd.oci.image.manifest.v1+json \
            application/vnd.docker.distribution.manifest.list.v2+json \
            application/vnd.docker.distribution.manifest.v2+json \
            --query 'images[0].imageManifest' --output text > "$out/.manifest" 2> "$out/.err-check"; then
            fail "cannot read the manifest of $shown (ecr:BatchGetImage) to check that engine $ENGINE can promote it: $(last_error "$out/.err-check")"
        fi
        if [ "$(tr -d ' \n' < "$out/.manifest")" = None ]; then
            fail "the source $shown was not found (ecr:BatchGetImage answered no image)"
        fi
        kind=$(manifest_kind "$out/.manifest")
        type=${kind#* }
        case "$kind" in
            image | index) continue ;;
            helm-chart*) what="a Helm chart (config media type $type)" ;;
            artifact*) what="an OCI artifact of type $type, not a container image" ;;
            *) what="a manifest whose kind cannot be told (no image config in it)" ;;
        esac
        fail "engine='$ENGINE' cannot promote $shown: it is $what. $ENGINE rebuilds what it copies as a container image (a new config, one platform), so it would not arrive as itself; nothing was written. $ARTIFACT_FIX"
    done <<CHECKS
$CHECK_SOURCES
CHECKS
    rm -f "$out/.manifest" "$out/.err-check"
}

if [ -n "${CHECK_SOURCES:-}" ]; then
    check ENGINE "${ENGINE:-}"
    check_sources
    printf 'ecr-promote login: every source is a container image: engine %s can promote it\n' "$ENGINE" >&2
fi

# entry N: one "host": {"auth": base64("AWS:<password>")} member of an auths object.
entry() {
    read -r host _ < "$out/.host-$1"
    auth=$(printf 'AWS:%s' "$(cat "$out/.pw-$1")" | base64 | tr -d '\n')
    printf '"%s":{"auth":"%s"}' "$host" "$auth"
}

# write_auths FILE SIDE: every login used by SIDE ("any" for all hosts) into one config.json.
write_auths() {
    file=$1 side=$2 body="" seen=" "
    i=1
    while [ "$i" -le "$n" ]; do
        read -r host sides < "$out/.host-$i"
        case ",$sides," in *",$side,"*) use=1 ;; *) use=0 ;; esac
        if [ "$side" = any ]; then
            case "$seen" in *" $host "*) use=0 ;; *) use=1 ;; esac
        fi
        if [ "$use" = 1 ]; then
            seen="$seen$host "
            [ -z "$body" ] || body="$body,"
            body="$body$(entry "$i")"
        fi
        i=$((i + 1))
    done
    printf '{"auths":{%s}}\n' "$body" > "$file.tmp" && mv "$file.tmp" "$file"
}

write_auths "$out/auth-source.json" source || fail "cannot write $out/auth-source.json"
write_auths "$out/auth-dest.json" dest || fail "cannot write $out/auth-dest.json"
if [ "${WRITE_CONFIG:-0}" = 1 ]; then
    write_auths "$out/config.json" any || fail "cannot write $out/config.json"
fi
if [ -n "${GATE_DIR:-}" ]; then
    write_auths "$GATE_DIR/auth-source.json" source || fail "cannot write $GATE_DIR/auth-source.json"
    chmod 0444 "$GATE_DIR/auth-source.json"
fi
if [ -n "${SOURCE_IMAGE:-}" ]; then
    check SOURCE_IMAGE "$SOURCE_IMAGE"
    printf 'FROM %s\n' "$SOURCE_IMAGE" > "$out/Dockerfile" || fail "cannot write $out/Dockerfile"
fi
cat "$out"/.retries-* 2> /dev/null | wc -l | tr -d ' ' > "$out/login-retries"
rm -f "$out"/.pw-* "$out"/.err-* "$out"/.host-* "$out"/.retries-* "$out"/.aws-config
rm -rf "$out"/.home-*
chmod 0444 "$out"/*.json "$out"/Dockerfile "$out/login-retries" 2>/dev/null
printf 'ecr-promote login: wrote auth files for %s registries\n' "$n" >&2
