# Init container, after login.sh, with create_repository: create each missing destination
# repository with the destination role, before any copy. Needs sh and the aws CLI.
#
# Every value comes from the environment:
#   CREATE_REPOSITORIES  one line per destination repository: "<dest region> <dest role or ->
#                        <dest account> <dest repository> <source region> <source role or -> <source account>
#                        <source repository>"
#   REPOSITORY_SETTINGS  "source": the source repository's tag mutability, scan on push and
#                        encryption type (a KMS key of the source account cannot serve the
#                        destination: KMS means the destination's AWS managed key); or
#                        "<MUTABLE|IMMUTABLE> <true|false> <AES256|KMS> <KMS key or ->"
#   ROLE_SESSION_NAME, AUTH_DIR, AWS_RETRY_MODE, AWS_MAX_ATTEMPTS  as for login.sh
# On failure the reason goes to stderr and to the termination message, and the exit code is 1.
repo_out="${AUTH_DIR:-/work}"
export AWS_RETRY_MODE="${AWS_RETRY_MODE:-standard}" AWS_MAX_ATTEMPTS="${AWS_MAX_ATTEMPTS:-10}"

repo_fail() {
    printf 'ecr-promote repository: %s\n' "$*" >&2
    printf 'ecr-promote repository: %s\n' "$*" > "${TERMINATION_LOG:-/dev/termination-log}" 2>/dev/null || true
    rm -f "$repo_out"/.repo-*
    exit 1
}

repo_check() {
    case "$2" in
        "" | *[!A-Za-z0-9:/_+=,.@-]*) repo_fail "refusing $1 value '$2': unexpected characters" ;;
    esac
}

repo_error() {
    tr '\n' ' ' < "$repo_out/.repo-err" | sed 's/^ *//; s/  */ /g' | cut -c1-600
}

# creds_of ROLE REGION: "<key> <secret> <token>" of a session of ROLE ("-": nothing, the pod's identity)
creds_of() {
    [ "$1" != - ] || return 0
    aws sts assume-role --region "$2" --role-arn "$1" --role-session-name "$ROLE_SESSION_NAME" \
        --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text
}

# as CREDS CMD...: run CMD with those session keys (none: the pod's own identity)
as() {
    creds=$1
    shift
    (
        if [ -n "$creds" ]; then
            # shellcheck disable=SC2086 # split the three tab-separated fields
            set -- $creds "$@"
            export AWS_ACCESS_KEY_ID="$1" AWS_SECRET_ACCESS_KEY="$2" AWS_SESSION_TOKEN="$3"
            unset AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_PROFILE \
                AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
            shift 3
        fi
        "$@"
    )
}

ensure_repository() {
    dregion=$1 drole=$2 daccount=$3 drepo=$4 sregion=$5 srole=$6 saccount=$7 srepo=$8
    if ! dcreds=$(creds_of "$drole" "$dregion" 2> "$repo_out/.repo-err"); then
        repo_fail "cannot assume role $drole to create repository $drepo: $(repo_error)"
    fi
    if as "$dcreds" aws ecr describe-repositories --region "$dregion" --registry-id "$daccount" \
        --repository-names "$drepo" > /dev/null 2> "$repo_out/.repo-err"; then
        printf 'ecr-promote repository: %s exists\n' "$drepo" >&2
        return 0
    fi
    if ! grep -q RepositoryNotFoundException "$repo_out/.repo-err"; then
        repo_fail "cannot read destination repository $drepo in account $daccount ($dregion): $(repo_error)"
    fi
    settings="$REPOSITORY_SETTINGS" filters=
    if [ "$settings" = source ]; then
        if ! screds=$(creds_of "$srole" "$sregion" 2> "$repo_out/.repo-err") ||
            ! settings=$(as "$screds" aws ecr describe-repositories --region "$sregion" \
                --registry-id "$saccount" --repository-names "$srepo" --output text \
                --query 'repositories[0].[imageTagMutability,imageScanningConfiguration.scanOnPush,encryptionConfiguration.encryptionType]' \
                2> "$repo_out/.repo-err"); then
            repo_fail "cannot read the settings of source repository $srepo in account $saccount to create $drepo: $(repo_error)"
        fi
        settings="$settings -"
        case "$settings" in
            *_WITH_EXCLUSION*)
                # the exclusion filters (e.g. sha256-* so that cosign's tags can move) are the
                # point of these modes: copy them, never fall back to plain (IM)MUTABLE
                if ! filters=$(as "$screds" aws ecr describe-repositories --region "$sregion" \
                    --registry-id "$saccount" --repository-names "$srepo" --output json \
                    --query 'repositories[0].imageTagMutabilityExclusionFilters' 2> "$repo_out/.repo-err"); then
                    repo_fail "cannot read the tag mutability exclusion filters of source repository $srepo in account $saccount to create $drepo: $(repo_error)"
                fi
                filters=$(printf '%s' "$filters" | tr -d ' \n\r\t')
                case "$filters" in
                    "" | null | "[]")
                        repo_fail "source repository $srepo in account $saccount is ${settings%%_WITH_EXCLUSION*}_WITH_EXCLUSION, but its exclusion filters could not be read (this aws CLI predates them: ECR added them in 2025): refusing to create $drepo without them. Use an init image with a newer aws CLI, or create $drepo yourself with the same filters"
                        ;;
                    *[!][{}\":,A-Za-z0-9._*-]*) repo_fail "refusing the exclusion filters of source repository $srepo: unexpected characters" ;;
                esac
                ;;
        esac
    fi
    # shellcheck disable=SC2086 # four fields
    set -- $settings
    case "${1:-}" in
        MUTABLE | IMMUTABLE) mutability=$1 ;;
        MUTABLE_WITH_EXCLUSION | IMMUTABLE_WITH_EXCLUSION) mutability=$1 ;; # with $filters, read above
        *) mutability=MUTABLE ;;
    esac
    case "${2:-}" in True | true) scan=true ;; *) scan=false ;; esac
    case "${3:-}" in KMS) encryption=encryptionType=KMS ;; *) encryption=encryptionType=AES256 ;; esac
    if [ "${4:--}" != - ]; then
        repo_check kmsKey "$4"
        encryption="$encryption,kmsKey=$4"
    fi
    set --
    [ -z "$filters" ] || set -- --image-tag-mutability-exclusion-filters "$filters"
    # --registry-id: without it ECR creates the repository in the caller's own account, which is
    # not the destination's when the role (or the pod's identity) belongs to another account
    if as "$dcreds" aws ecr create-repository --region "$dregion" --registry-id "$daccount" \
        --repository-name "$drepo" \
        --image-tag-mutability "$mutability" "$@" --image-scanning-configuration "scanOnPush=$scan" \
        --encryption-configuration "$encryption" > /dev/null 2> "$repo_out/.repo-err" ||
        grep -q RepositoryAlreadyExistsException "$repo_out/.repo-err"; then
        printf 'ecr-promote repository: created %s in %s (%s, scanOnPush=%s, %s)\n' "$drepo" "$dregion" \
            "$mutability" "$scan" "$encryption" >&2
        return 0
    fi
    if [ -n "$filters" ] && grep -q 'Unknown options\|Unknown parameter' "$repo_out/.repo-err"; then
        repo_fail "cannot create destination repository $drepo in account $daccount ($dregion) as $mutability with the source's exclusion filters $filters: this aws CLI predates them (ECR added them in 2025). Use an init image with a newer aws CLI, or create $drepo yourself with the same filters: $(repo_error)"
    fi
    repo_fail "cannot create destination repository $drepo in account $daccount ($dregion): $(repo_error)"
}

case "${REPOSITORY_SETTINGS:-}" in
    source | MUTABLE\ * | IMMUTABLE\ *) ;;
    *) repo_fail "refusing REPOSITORY_SETTINGS: expected 'source' or '<mutability> <scan> <encryption> <key>'" ;;
esac
while read -r dregion drole daccount drepo sregion srole saccount srepo; do
    [ -n "$dregion" ] || continue
    for value in "$dregion" "$drole" "$daccount" "$drepo" "$sregion" "$srole" "$saccount" "$srepo"; do
        repo_check CREATE_REPOSITORIES "$value"
    done
    ensure_repository "$dregion" "$drole" "$daccount" "$drepo" "$sregion" "$srole" "$saccount" "$srepo"
done <<EOF
${CREATE_REPOSITORIES:-}
EOF
rm -f "$repo_out"/.repo-*
