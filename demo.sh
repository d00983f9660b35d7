#!/usr/bin/env bash
# Run the example shop: the development server and a runjobs worker, side by side.
#
#   ./demo.sh              then log in at http://127.0.0.1:8000/admin/ as admin / admin
#   PORT=8001 ./demo.sh    another port
#
# Ctrl-C stops both. The database is the SQLite file example_project/db.sqlite3; delete it to
# start over.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

PORT="${PORT:-8000}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-demo"
PY="$VENV/bin/python"
MANAGE=("$PY" "$ROOT/example_project/manage.py")
ADMIN_USER="admin"
ADMIN_PASSWORD="admin"

log() { printf '==> %s\n' "$*" >&2; }

[[ "$PORT" =~ ^[0-9]+$ ]] || { log "PORT must be a number, not '$PORT'."; exit 2; }

# --- the venv: rebuilt only when pyproject.toml changes -----------------------------------

if [[ -d "$VENV" ]] && ! "$PY" -c 'pass' >/dev/null 2>&1; then
    log "Removing broken venv $VENV"
    rm -rf "$VENV"
fi
if [[ ! -x "$PY" ]]; then
    log "Creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
stamp_file="$VENV/.django-jobs-install"
if [[ ! -f "$stamp_file" || "$(<"$stamp_file")" != "$stamp" ]]; then
    log "Installing django_jobs into $VENV"
    "$PY" -m pip install --quiet -e "$ROOT"
    printf '%s\n' "$stamp" >"$stamp_file"
fi

# --- the database and the demo data -------------------------------------------------------

# The demo always runs on its own SQLite file, whatever the calling shell exports.
unset DATABASE_URL DJANGO_SETTINGS_MODULE

log "Migrating example_project/db.sqlite3"
"${MANAGE[@]}" migrate --noinput

created="$("${MANAGE[@]}" shell -c "
from django.contrib.auth import get_user_model
User = get_user_model()
if User.objects.filter(username='$ADMIN_USER').exists():
    print('exists')
else:
    User.objects.create_superuser('$ADMIN_USER', 'admin@example.com', '$ADMIN_PASSWORD')
    print('created')
" | tail -n 1)"
if [[ "$created" == created ]]; then
    log "Created the superuser $ADMIN_USER / $ADMIN_PASSWORD"
    # First start on this database: give the admin something to show.
    "${MANAGE[@]}" seeddemo
fi

# --- the server and the worker ------------------------------------------------------------

SERVER_PID=""
WORKER_PID=""

# shellcheck disable=SC2317  # called by the traps below
stop() {
    trap - EXIT INT TERM
    local pid
    for pid in "$WORKER_PID" "$SERVER_PID"; do
        # Each runs in its own process group (set -m below): signal the whole group, which
        # reaches runserver's autoreloader child too. The worker finishes or releases its jobs.
        if [[ -n "$pid" ]]; then
            kill -TERM -- "-$pid" 2>/dev/null || true
        fi
    done
    for pid in "$WORKER_PID" "$SERVER_PID"; do
        if [[ -n "$pid" ]]; then
            wait "$pid" 2>/dev/null || true
        fi
    done
    log "Stopped."
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat <<EOF

  Example shop:  http://127.0.0.1:$PORT/        (sign up at /signup/)
  Admin:         http://127.0.0.1:$PORT/admin/  user: $ADMIN_USER  password: $ADMIN_PASSWORD
  Jobs:          http://127.0.0.1:$PORT/admin/django_jobs/job/

  Emails are printed below by the runjobs worker. Press Ctrl-C to stop.

EOF

# Job control gives each background process its own process group, so Ctrl-C reaches this
# script only and stop() shuts both down in order.
set -m
"${MANAGE[@]}" runjobs &
WORKER_PID=$!
"${MANAGE[@]}" runserver "127.0.0.1:$PORT" &
SERVER_PID=$!
set +m

# Whichever stops first (a crash, or a port already in use) ends the demo.
status=0
wait -n "$WORKER_PID" "$SERVER_PID" || status=$?
log "A demo process exited (status $status); stopping the other."
exit "$status"
