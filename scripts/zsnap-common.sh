# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154 # prog, here, global and taken are shared with the calling script
# Shared by the zsnap-* scripts (sourced, never run): option routing to zsnap-plan, the
# config (parsed by zsnap-plan, never here), the per-dataset lock, and running a plan's
# exact commands. Callers set `prog` and `here` (their own directory) and use `global` for
# zsnap-plan's options.

say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
    local code=$1
    shift
    say "$*"
    exit "$code"
}

# The toolkit's version, the binaries' (Cargo.toml): scripts and binaries are installed and
# upgraded together. tests/it/docs.rs keeps the two equal.
zsnap_version=0.1.0
print_version() { printf '%s %s\n' "$prog" "$zsnap_version"; }

# Cron runs with PATH=/usr/bin:/bin. The binaries are installed beside the scripts, so the
# scripts' own directory goes first; zfs lives in /usr/sbin or /sbin, added last so a zfs
# (or wrapper) the admin put earlier in PATH still wins. Exported: zsnap-plan, and the
# plan's commands, run zfs and s3put by name too.
PATH=$here:${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin
export PATH

# need_commands NAME...: exit 127 with one line naming the first command not found, before
# anything is done (rather than a plan failing halfway with bash's "command not found").
need_commands() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die 127 "$c not found (looked in $PATH)"
    done
}

# Print the comment block at the top of a script (its --help).
usage_from() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$1"; }

# zsnap-plan's options that scripts pass through: with a value, and switches.
plan_value_opts=" --dataset --snapshot-prefix --compressor --encrypt-to --identity --bucket --s3-prefix --config \
--endpoint --region --profile --connect-timeout --read-timeout --retries "
plan_switches=" --path-style --virtual-host "

# take_global "$@": if $1 is one of zsnap-plan's options, append it (and its value) to
# `global` and set `taken` to how many words it used; otherwise taken=0.
take_global() {
    taken=0
    local name=${1%%=*}
    if [[ "$plan_value_opts" == *" $name "* ]]; then
        if [[ "$1" == *=* ]]; then
            global+=("$1") taken=1
        else
            (($# >= 2)) || die 64 "$1 needs a value"
            global+=("$1" "$2") taken=2
        fi
    elif [[ "$plan_switches" == *" $1 "* ]]; then
        global+=("$1") taken=1
    fi
}

# Run "$@" (a zfs command) until it succeeds, retrying about 10 s while its error says the
# dataset is busy (a just-received dataset can be, for a moment). Any other error fails at once.
zfs_retry_busy() {
    local out tries=0
    while ! out=$("$@" 2>&1); do
        [[ "$out" == *busy* ]] && ((tries < 40)) || return 1
        tries=$((tries + 1))
        sleep 0.25
    done
}

need_value() { (($# >= 2)) || die 64 "$1 needs a value"; }

# Resolve the settings once, through zsnap-plan (flags > environment > config file >
# defaults), into ZSNAP_DATASET, ZSNAP_BUCKET, ZSNAP_S3_URL, ...
load_config() {
    local settings
    need_commands zsnap-plan
    settings=$(zsnap-plan "${global[@]}" --format sh config) || exit $?
    eval "$settings"
    [[ -n "${ZSNAP_DATASET:-}" ]] || die 64 "no dataset: give --dataset or set DATASET in the config"
}

# One run per dataset at a time: a second run exits 72 at once instead of waiting (cron
# would otherwise pile runs up behind a slow upload).
lock_dataset() {
    local dir=${ZSNAP_LOCK_DIR:-/run/lock/zsnap} file
    mkdir -p "$dir" || die 74 "cannot create lock directory $dir"
    file="$dir/$(printf '%s' "$1" | tr '/ ' '%_').lock"
    exec 9>>"$file" || die 74 "cannot open lock file $file"
    flock -n 9 || die 72 "another zsnap run holds the lock on $1 ($file)"
}

# Run each line of a plan in order, stopping at the first failure (later snapshots depend
# on earlier ones). Each command runs in its own process group so a signal to this script
# reaches the whole pipeline (s3put then aborts its upload). A failed pipeline reports the
# stage that failed on its own: the leftmost non-zero status that is not a broken pipe (141
# SIGPIPE, 80 closed stdout: those died because a later stage had), so a corrupt object is
# s3get's 65, not the 1 of the zfs recv it starved; a zfs recv that ran out of space is 74.
# A caller may define on_failure (called with the status before the message) to undo what
# the run did, and set undone to what it says instead of "nothing of it was kept".
child=""
undone="nothing of it was kept"
# Progress of the steps' s3put and s3get: their stderr is the tee below, never a terminal,
# so they are told through the environment (see s3put(1)): ZSNAP_PROGRESS=tty when ours is
# a terminal (their line is rewritten in place through the tee), 1 with --progress (a line
# every 10 s or --progress-interval SECS, and a summary: for logs). Callers that take
# --progress set these; ZSNAP_PROGRESS=0 from the caller turns the terminal default off.
progress=0 progress_interval=""
progress_option() {
    case "$1" in
    --progress) progress=1 taken=1 ;;
    --progress-interval | --progress-interval=*)
        if [[ "$1" == *=* ]]; then
            progress_interval=${1#*=} taken=1
        else
            need_value "$@"
            progress_interval=$2 taken=2
        fi
        [[ "$progress_interval" =~ ^[0-9]+(\.[0-9]+)?s?$ ]] ||
            die 64 "--progress-interval: '$progress_interval' is not a number of seconds (e.g. 10, 0.5)"
        ;;
    *) taken=0 ;;
    esac
}
export_progress() {
    local asked=$progress
    [[ -z "$progress_interval" ]] || asked=1
    if [[ -t 2 ]] && { ((asked)) || [[ "${ZSNAP_PROGRESS:-}" != 0 ]]; }; then
        export ZSNAP_PROGRESS=tty
    elif ((asked)); then
        export ZSNAP_PROGRESS=1
    fi
    [[ -z "$progress_interval" ]] || export ZSNAP_PROGRESS_INTERVAL=$progress_interval
}
forward() {
    local sig=$1 code=$2
    if [[ -n "$child" ]]; then
        kill -s "$sig" -- "-$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    if declare -F on_failure >/dev/null; then on_failure "$code"; fi
    say "stopped by SIG$sig; $undone"
    exit "$code"
}
# The status a failed pipeline stands for (see above), from its stages' statuses.
blame() {
    local s first=0
    for s in "$@"; do
        ((s == 0)) && continue
        ((first)) || first=$s
        if ((s != 141 && s != 80)); then
            echo "$s"
            return
        fi
    done
    echo "$first"
}
# Wait for the tee of a step's stderr, 10 s at most: a process the step left behind (a kill
# -9 orphan) may hold the fifo open for as long as it runs, and the step's status is known.
wait_tee() {
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$1" 2>/dev/null; then
        return 0
    fi
    wait "$1" 2>/dev/null || true
}
# A step's replicas (zsync-ssh --tee inside an upload's --exec) append their JSON lines to
# $ZSNAP_REPLICA_REPORT; after each step they are printed on stdout and the failed ones
# counted in replicas_failed (a replica never fails the step: the upload went on).
replicas_failed=0
replica_lines() {
    local file=$1 l
    [[ -s "$file" ]] || return 0
    while IFS= read -r l; do
        printf '%s\n' "$l"
        [[ "$l" != *'"result":"failed"'* ]] || replicas_failed=$((replicas_failed + 1))
    done <"$file"
    : >"$file"
}
run_plan() {
    local plan=$1 line n=0 total rc errs teed
    total=$(grep -c . <<<"$plan")
    export_progress
    errs=$(mktemp "${TMPDIR:-/tmp}/zsnap-stderr.XXXXXX")
    export ZSNAP_REPLICA_REPORT=$errs.replicas
    trap 'forward INT 130' INT
    trap 'forward TERM 143' TERM
    trap 'forward HUP 129' HUP
    while IFS= read -r line; do
        [[ -n "$line" ]] || continue
        n=$((n + 1))
        say "[$n/$total] $line"
        rc=0
        # stderr goes to the terminal and, through tee, to $errs; tee is waited for (it ends
        # when the step's last writer closes the fifo), so $errs is whole when grepped below.
        rm -f "$errs.fifo"
        mkfifo "$errs.fifo"
        tee "$errs" <"$errs.fifo" >&2 &
        teed=$!
        # shellcheck disable=SC2016 # expanded by the inner bash
        setsid bash -c "$line"'
            s=("${PIPESTATUS[@]}")
            printf "%s\n" "${s[*]}" >&3' 3>"$errs.status" 2>"$errs.fifo" &
        child=$!
        wait "$child" || rc=$?
        child=""
        wait_tee "$teed"
        if ((rc == 0)) && [[ -s "$errs.status" ]]; then
            # shellcheck disable=SC2046 # the statuses, one word each
            rc=$(blame $(<"$errs.status"))
        fi
        if ((rc == 1)) && grep -qiE 'out of space|no space left on device' "$errs"; then
            rc=74
        fi
        replica_lines "$errs.replicas"
        if ((rc != 0)); then
            rm -f "$errs" "$errs.status" "$errs.fifo" "$errs.replicas"
            if declare -F on_failure >/dev/null; then on_failure "$rc"; fi
            die "$rc" "step $n of $total failed (exit $rc); steps before it are complete, $undone"
        fi
    done <<<"$plan"
    rm -f "$errs" "$errs.status" "$errs.fifo" "$errs.replicas"
    trap - INT TERM HUP
}

# --all (every [fs:DATASET] section of the config) and --recursive (a dataset and each of
# its descendants, `zfs list -r`): the script runs itself once per dataset, with these
# options taken out and --dataset DS added, so each dataset is run as if given with
# --dataset: its own settings ([fs:] section), lock, plan and exit status, and one failing
# (even its lock held, 72) does not stop the others. A script notes its arguments (argv,
# argc) before its option loop, calls each_option there, and run_each after it.
each="" each_at=()
each_option() {
    [[ -z "$each" || "$each" == "${1#--}" ]] || die 64 "--all and --recursive do not go together: give one"
    each=${1#--}
    each_at+=("$2")
}

# Whether --dataset is among the options in `global` (a value that merely reads
# "--dataset" does not count).
dataset_given() {
    local i
    for ((i = 0; i < ${#global[@]}; i++)); do
        case "${global[i]}" in
        --dataset | --dataset=*) return 0 ;;
        esac
        [[ "${global[i]}" == *=* || "$plan_value_opts" != *" ${global[i]} "* ]] || i=$((i + 1))
    done
    return 1
}

# The datasets of an --all or --recursive run, one a line. Run in a subshell ($(...)): the
# settings it evals must not leak into what the per-dataset runs inherit.
each_datasets() {
    local settings out
    if [[ $each == all ]] && dataset_given; then
        die 64 "--all runs for every [fs:DATASET] section of the config: give it without --dataset"
    fi
    need_commands zsnap-plan
    settings=$(zsnap-plan "${global[@]}" --format sh config) || exit $?
    eval "$settings"
    if [[ $each == all ]]; then
        [[ -n "$ZSNAP_FS_DATASETS" ]] ||
            die 64 "--all needs [fs:DATASET] sections in the config, and ${ZSNAP_CONFIG_FILE:-/etc/zsnap/zsnap.conf (not found)} has none"
        printf '%s\n' "$ZSNAP_FS_DATASETS"
        return
    fi
    [[ -n "${ZSNAP_DATASET:-}" ]] || die 64 "--recursive needs a dataset: give --dataset or set DATASET in the config"
    need_commands zfs
    if ! out=$(zfs list -H -o name -t filesystem,volume -r "$ZSNAP_DATASET" 2>&1); then
        [[ "$out" != *"does not exist"* ]] || die 66 "dataset $ZSNAP_DATASET does not exist"
        die 1 "zfs list -r $ZSNAP_DATASET failed: ${out%%$'\n'*}"
    fi
    printf '%s\n' "$out"
}

json_string() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# run_each VERDICTS JSON TABLE: run this script for each dataset (see each_option), then
# exit. VERDICTS: the exit codes that are verdicts rather than failures (prune's 1,
# --health's 1 and 2), counted as warning (1) or critical (2). JSON=1: after each
# dataset's own output, a line {"dataset","scope","result","exit"} on stdout, and at the
# end {"summary":true,"scope","datasets","ok","warning","critical","failed","exit"};
# TABLE=1: each dataset's output under a "DATASET:" heading instead. Always a line per
# dataset on stderr. The exit status is the worst: the first failing dataset's code (in
# the order run), else the highest verdict (2 over 1), else 0. SIGINT, SIGTERM or SIGHUP
# stops the loop once the running dataset is done (it gets the signal itself from a
# terminal or systemd), and the status is 130, 143 or 129.
run_each() {
    local verdicts=" $1 " json=$2 table=$3 text ds rc result worst=0 failed=0 stop="" i n=0
    local -a kept=() list=()
    local -A count=([ok]=0 [warning]=0 [critical]=0 [failed]=0)
    text=$(each_datasets) || exit $?
    mapfile -t list <<<"$text"
    for i in "${!argv[@]}"; do
        [[ " ${each_at[*]} " == *" $i "* ]] || kept+=("${argv[i]}")
    done
    trap 'stop="SIGINT 130"' INT
    trap 'stop="SIGTERM 143"' TERM
    trap 'stop="SIGHUP 129"' HUP
    for ds in "${list[@]}"; do
        ((!table)) || { ((n == 0)) || echo; printf '%s:\n' "$ds"; }
        n=$((n + 1))
        rc=0
        "${BASH:-bash}" "$here/$prog" "${kept[@]}" --dataset "$ds" || rc=$?
        if ((rc == 0)); then
            result=ok
        elif [[ "$verdicts" == *" $rc "* ]]; then
            result=critical
            ((rc != 1)) || result=warning
            ((failed || rc <= worst)) || worst=$rc
        else
            result=failed
            ((failed)) || worst=$rc
            failed=1
        fi
        count[$result]=$((count[$result] + 1))
        if ((rc == 0)); then say "$ds: ok"; else say "$ds: $result (exit $rc)"; fi
        ((!json)) || printf '{"dataset":%s,"scope":"%s","result":"%s","exit":%d}\n' \
            "$(json_string "$ds")" "$each" "$result" "$rc"
        [[ -z "$stop" ]] || break
    done
    trap - INT TERM HUP
    [[ -z "$stop" ]] || worst=${stop#* }
    say "$n of ${#list[@]} datasets run: ${count[ok]} ok, ${count[warning]} warning, ${count[critical]} critical, ${count[failed]} failed${stop:+, stopped by ${stop% *}}"
    ((!json)) || printf '{"summary":true,"scope":"%s","datasets":%d,"run":%d,"ok":%d,"warning":%d,"critical":%d,"failed":%d,"exit":%d%s}\n' \
        "$each" "${#list[@]}" "$n" "${count[ok]}" "${count[warning]}" "${count[critical]}" "${count[failed]}" \
        "$worst" "${stop:+,\"stopped\":\"${stop% *}\"}"
    exit "$worst"
}
