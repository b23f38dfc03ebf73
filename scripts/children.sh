# Sourced by compare.sh and ablate.sh: run_child runs a command in the background and
# waits for it, so that Ctrl-C / SIGTERM on the script reach the trap at once; the trap
# passes SIGTERM to the child (the harness, which stops its train.py at a safe point),
# waits for it and exits: no process outlives the script.
child=""
stop_child() {
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit "$1"
}
trap 'stop_child 130' INT
trap 'stop_child 143' TERM
run_child() {
  "$@" &
  child=$!
  local status=0
  wait "$child" || status=$?
  child=""
  return "$status"
}
