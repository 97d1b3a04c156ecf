#!/usr/bin/env bash
# Log throughput: one stage prints many lines. `buildit run --plain` (lines to stdout, every line recorded in the
# default SQLite store) against the same command with its output sent to a file, alternately, several times in
# one go. Prints the median ratio, then checks that `buildit runs logs` gives back every line, in order.
#
# Usage: bench/log-lines.sh [LINES] [ROUNDS] [awk|seq|sh]     (default: 1000000 5 awk)
#   awk: an awk loop printing `line N of the build log` (a program doing a little work per line)
#   seq: `seq 1 LINES` (nothing but output: the hardest case for any log pipeline)
#   sh:  a POSIX shell loop running `echo` (what build scripts do)
set -euo pipefail
cd "$(dirname "$0")/.."

lines="${1:-1000000}"
rounds="${2:-5}"
kind="${3:-awk}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

case "$kind" in
    awk) command="awk 'BEGIN { for (i = 1; i <= $lines; i++) print \"line \" i \" of the build log\" }'" ;;
    seq) command="seq 1 $lines" ;;
    sh) command="i=0; while [ \$i -lt $lines ]; do i=\$((i+1)); echo \"line \$i\"; done" ;;
    *) echo "unknown kind $kind (awk, seq or sh)" >&2; exit 2 ;;
esac

cargo build --release --locked -q -p buildit-cli
buildit="$(pwd)/${CARGO_TARGET_DIR:-target}/release/buildit"
python3 - "$work/buildit.kdl" "$command" <<'PY'
import json, sys
path, command = sys.argv[1], sys.argv[2]
with open(path, "w") as f:
    f.write('pipeline "log-lines"\nstage "print" {\n    run ' + json.dumps(command) + "\n}\n")
PY
echo "stage command: $command"

python3 bench/alternate.py "$rounds" buildit file \
    -- "$buildit" run --plain --workspace "$work" "$work/buildit.kdl" \
    -- sh -c "$command > $work/direct.txt"

# Every line of the last run, in order, from the store; the first lines are the echoed command.
"$buildit" runs logs "log-lines#$rounds" --stage print --workspace "$work" | grep -v '^\$ ' > "$work/stored.txt"
if cmp -s "$work/stored.txt" "$work/direct.txt"; then
    echo "runs logs: all $(wc -l < "$work/stored.txt") lines back, in order"
else
    echo "runs logs: the stored lines differ from the command's output" >&2
    exit 1
fi
