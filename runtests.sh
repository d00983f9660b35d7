#!/usr/bin/env bash
# Run the django_jobs test suite on every supported database, Python and Django.
#
#   ./runtests.sh                                  all databases, Python 3.11 and 3.13
#   ./runtests.sh --db sqlite --python 3.11        one combination
#   ./runtests.sh --db postgres,mariadb -- -x -k claim    pytest options after --
#   ./runtests.sh --db pgbouncer                   the PgBouncer subset (see PGBOUNCER_TESTS)
#   ./runtests.sh --setup-only                     only build the venvs and start the services
#
# The venvs .venv-py311 (Django 5.2 LTS) and .venv-py313 (Django 6) are built on first use
# and rebuilt only when pyproject.toml (or the pinned Django range) changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

# Bump when the install recipe below changes, so existing venvs are rebuilt.
RECIPE_VERSION=1
MIN_PIP="25.1"  # the first pip that installs dependency groups (--group)
EXTRAS="postgres,mysql,tasks,metrics,otel"
DEP_GROUPS=(test lint docs)

POSTGRES_URL="postgres://postgres@127.0.0.1:5432/postgres"
MARIADB_URL="mysql://root@127.0.0.1:3306/test"
# PgBouncer in transaction pooling mode in front of the same PostgreSQL; the tests reach
# PostgreSQL itself too (POSTGRES_URL), to LISTEN on (DJANGO_JOBS["LISTEN_DATABASE"]).
PGBOUNCER_PORT=6432
PGBOUNCER_URL="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/postgres"
# What runs through it when no test paths are given: claiming, exactly-once and graceful
# stop with real workers, waking (LISTEN on the direct alias, and polling without it),
# reconnection, and the cluster-wide limits (advisory locks held per transaction).
# On Python 3.11 only, unless --db names pgbouncer.
PGBOUNCER_TESTS=(
    tests/test_pgbouncer.py tests/test_claiming.py tests/test_worker_processes.py
    tests/test_notify.py tests/test_batches.py tests/test_reconnect.py tests/test_limits.py
)
PGBOUNCER_DEFAULT_PYTHONS=(3.11)
CHROMIUM="/usr/bin/chromium"
# faketime: the chaos test's skewed clocks; pgbouncer: --db pgbouncer
APT_PACKAGES=(libmariadb-dev pkg-config chromium faketime pgbouncer)

ALL_DBS=(sqlite postgres mariadb pgbouncer)
ALL_PYTHONS=(3.11 3.13)

usage() {
    cat <<'EOF'
Usage: ./runtests.sh [options] [-- pytest options]

  --db NAME          sqlite, postgres, mariadb, pgbouncer or all; repeatable or a comma list
                     (default: all; pgbouncer runs PostgreSQL through PgBouncer in transaction
                     mode, a subset of the tests, on Python 3.11 unless named with --db)
  --python VERSION   3.11 (Django 5.2), 3.13 (Django 6) or all; repeatable or a comma list
                     (default: all)
  --setup-only       install system packages, start the databases selected with --db and build
                     the venvs selected with --python, then exit
  --reinstall        delete the selected venvs and build them anew
  -h, --help         show this help

Everything after -- goes to pytest, e.g. ./runtests.sh --db sqlite -- -x -k schedules
EOF
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'runtests.sh: %s\n' "$*" >&2; exit 2; }

# --- arguments -----------------------------------------------------------------------------

DBS=()
PGBOUNCER_NAMED=0
PYTHONS=()
SETUP_ONLY=0
REINSTALL=0
PYTEST_ARGS=()

add_dbs() {
    local item
    local -a items
    IFS=',' read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        case "$item" in
            all) DBS+=("${ALL_DBS[@]}") ;;
            sqlite | postgres | mariadb) DBS+=("$item") ;;
            pgbouncer) DBS+=(pgbouncer); PGBOUNCER_NAMED=1 ;;
            postgresql) DBS+=(postgres) ;;
            mysql) DBS+=(mariadb) ;;
            *) die "unknown database '$item'; use sqlite, postgres, mariadb, pgbouncer or all." ;;
        esac
    done
}

add_pythons() {
    local item
    local -a items
    IFS=',' read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        case "$item" in
            all) PYTHONS+=("${ALL_PYTHONS[@]}") ;;
            3.11 | 311 | py311) PYTHONS+=(3.11) ;;
            3.13 | 313 | py313) PYTHONS+=(3.13) ;;
            *) die "unknown Python '$item'; use 3.11, 3.13 or all." ;;
        esac
    done
}

while (($# > 0)); do
    case "$1" in
        --db) (($# >= 2)) || die "--db needs a value."; add_dbs "$2"; shift 2 ;;
        --db=*) add_dbs "${1#--db=}"; shift ;;
        --python) (($# >= 2)) || die "--python needs a value."; add_pythons "$2"; shift 2 ;;
        --python=*) add_pythons "${1#--python=}"; shift ;;
        --setup-only) SETUP_ONLY=1; shift ;;
        --reinstall) REINSTALL=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) usage >&2; die "unknown option '$1'." ;;
    esac
done

# Keep the order of ALL_* and drop duplicates.
dedupe() {
    local wanted=" $1 " item
    shift
    for item in "$@"; do
        [[ "$wanted" == *" $item "* ]] && printf '%s\n' "$item"
    done
    return 0
}
((${#DBS[@]} > 0)) || DBS=("${ALL_DBS[@]}")
((${#PYTHONS[@]} > 0)) || PYTHONS=("${ALL_PYTHONS[@]}")
mapfile -t DBS < <(dedupe "${DBS[*]}" "${ALL_DBS[@]}")
mapfile -t PYTHONS < <(dedupe "${PYTHONS[*]}" "${ALL_PYTHONS[@]}")

wants_db() { [[ " ${DBS[*]} " == *" $1 "* ]]; }

# --- system packages and services ----------------------------------------------------------

is_root() { [[ "$(id -u)" == 0 ]]; }

ensure_system_packages() {
    local -a missing=()
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    if ! is_root || ! command -v apt-get >/dev/null; then
        log "warning: missing system packages: ${missing[*]} (install them with apt-get as root;"
        log "mysqlclient needs libmariadb-dev and pkg-config, browser tests need chromium)."
        return 0
    fi
    log "Installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND until it succeeds or time runs out.
wait_for() {
    local seconds="$1" what="$2" i
    shift 2
    for ((i = 0; i < seconds * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    log "error: $what is not accepting connections after ${seconds}s."
    return 1
}

postgres_ready() {
    if command -v pg_isready >/dev/null; then
        pg_isready -q -h 127.0.0.1 -p 5432
    else
        port_open 5432
    fi
}

mariadb_ready() {
    local client
    client="$(command -v mariadb-admin || command -v mysqladmin || true)"
    if [[ -n "$client" ]]; then
        "$client" --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping
    else
        port_open 3306
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_postgres() {
    postgres_ready && return 0
    local version
    # shellcheck disable=SC2012  # the directories are version numbers
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    if is_root && command -v pg_ctlcluster >/dev/null && [[ -n "$version" ]]; then
        log "Starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    else
        log "warning: PostgreSQL is not running on 127.0.0.1:5432 and cannot be started here."
    fi
    wait_for 30 "PostgreSQL (127.0.0.1:5432)" postgres_ready
}

ensure_mariadb() {
    mariadb_ready >/dev/null 2>&1 && return 0
    if is_root && [[ -x /usr/sbin/mariadbd ]]; then
        log "Starting MariaDB"
        # /run is a tmpfs: a fresh machine has no socket directory yet.
        if id mysql >/dev/null 2>&1; then
            install -d -o mysql -g mysql /run/mysqld || true
        fi
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    else
        log "warning: MariaDB is not running on 127.0.0.1:3306 and cannot be started here."
    fi
    wait_for 60 "MariaDB (127.0.0.1:3306)" mariadb_ready
}

# PgBouncer: started here on 127.0.0.1:6432 unless something already listens there, from a
# config in a temporary folder, and stopped again when this script ends (--setup-only leaves
# it running, like the databases, for the runs that follow).
PGBOUNCER_DIR=""
pgbouncer_ready() { port_open "$PGBOUNCER_PORT"; }

ensure_pgbouncer() {
    if pgbouncer_ready; then
        log "Using the PgBouncer already listening on 127.0.0.1:$PGBOUNCER_PORT"
        return 0
    fi
    if ! command -v pgbouncer >/dev/null; then
        log "error: pgbouncer is not installed (Debian: apt-get install pgbouncer)."
        return 1
    fi
    PGBOUNCER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/django_jobs-pgbouncer.XXXXXX")" || return 1
    # Every database name goes to the test PostgreSQL (the wildcard), so the test database
    # that pytest-django creates is reachable too. Trust, as the test PostgreSQL does; the
    # user must still be listed in the auth file.
    cat >"$PGBOUNCER_DIR/pgbouncer.ini" <<INI || return 1
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGBOUNCER_DIR/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 500
default_pool_size = 30
ignore_startup_parameters = extra_float_digits,options
logfile = $PGBOUNCER_DIR/pgbouncer.log
pidfile = $PGBOUNCER_DIR/pgbouncer.pid
INI
    printf '"postgres" ""\n' >"$PGBOUNCER_DIR/userlist.txt" || return 1
    local version
    version="$(pgbouncer --version | head -n 1)"
    log "Starting $version on 127.0.0.1:$PGBOUNCER_PORT (transaction pooling; $PGBOUNCER_DIR)"
    local -a run_as=()
    if is_root; then
        # PgBouncer refuses to run as root: it drops to postgres, which must read its folder.
        chown -R postgres: "$PGBOUNCER_DIR" || return 1
        run_as=(-u postgres)
    fi
    pgbouncer -q -d ${run_as[@]+"${run_as[@]}"} "$PGBOUNCER_DIR/pgbouncer.ini" || return 1
    wait_for 15 "PgBouncer (127.0.0.1:$PGBOUNCER_PORT)" pgbouncer_ready
}

# shellcheck disable=SC2317  # called by the traps
stop_pgbouncer() {
    [[ -n "$PGBOUNCER_DIR" ]] || return 0
    local pid
    pid="$(cat "$PGBOUNCER_DIR/pgbouncer.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null || true
    fi
    rm -rf "$PGBOUNCER_DIR"
    PGBOUNCER_DIR=""
}

# Databases that could not be reached: their combinations fail, the others still run.
UNAVAILABLE_DBS=()
ensure_services() {
    if wants_db postgres || wants_db pgbouncer; then
        ensure_postgres || UNAVAILABLE_DBS+=(postgres pgbouncer)
    fi
    if wants_db mariadb && ! ensure_mariadb; then UNAVAILABLE_DBS+=(mariadb); fi
    if wants_db pgbouncer && db_available pgbouncer && ! ensure_pgbouncer; then
        UNAVAILABLE_DBS+=(pgbouncer)
    fi
    return 0
}
db_available() { [[ " ${UNAVAILABLE_DBS[*]} " != *" $1 "* ]]; }

# --- virtual environments ------------------------------------------------------------------

venv_dir() { printf '%s/.venv-py%s' "$ROOT" "${1//./}"; }

django_spec() {
    case "$1" in
        3.11) printf '%s' 'django>=5.2,<6.0' ;;
        3.13) printf '%s' 'django>=6.0,<6.2' ;;
    esac
}

# find_python 3.13: an interpreter of exactly that version, on PATH or under pyenv.
find_python() {
    local version="$1" candidate
    local -a candidates=("python$version")
    if command -v pyenv >/dev/null; then
        candidates+=("$(pyenv root)"/versions/"$version".*/bin/"python$version")
    fi
    candidates+=("/usr/bin/python$version" "/usr/local/bin/python$version" python3)
    for candidate in "${candidates[@]}"; do
        if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (${version/./, }))" \
            >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

install_stamp() {
    local version="$1" interpreter="$2"
    {
        printf 'recipe %s\ndjango %s\nextras %s\ngroups %s\n' \
            "$RECIPE_VERSION" "$(django_spec "$version")" "$EXTRAS" "${DEP_GROUPS[*]}"
        "$interpreter" -c 'import sys; print(sys.version)'
        cat "$ROOT/pyproject.toml"
    } | sha256sum | cut -d' ' -f1
}

# setup_venv 3.11: create or refresh .venv-py311. Every step checks its own status, since
# `set -e` does not apply inside a function called from an `if`.
setup_venv() {
    local version="$1" venv interpreter stamp_file stamp fresh=0
    venv="$(venv_dir "$version")"
    stamp_file="$venv/.django-jobs-install"
    interpreter="$(find_python "$version")" \
        || { log "error: Python $version not found (on PATH or under pyenv)."; return 1; }

    # A venv whose interpreter vanished (e.g. after a pyenv upgrade) is rebuilt from scratch.
    if [[ -d "$venv" ]] && ! "$venv/bin/python" -c 'pass' >/dev/null 2>&1; then
        log "Removing broken venv $venv"
        rm -rf "$venv" || return 1
    elif [[ -d "$venv" ]] && ((REINSTALL)); then
        log "Removing $venv (--reinstall)"
        rm -rf "$venv" || return 1
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        log "Creating $venv with $interpreter"
        "$interpreter" -m venv "$venv" || return 1
        fresh=1
    fi

    stamp="$(install_stamp "$version" "$venv/bin/python")" || return 1
    if ((!fresh)) && [[ -f "$stamp_file" && "$(<"$stamp_file")" == "$stamp" ]]; then
        log "$venv is up to date ($(venv_versions "$venv"))"
        return 0
    fi

    log "Installing django_jobs[$EXTRAS] + groups ${DEP_GROUPS[*]} + $(django_spec "$version") into $venv"
    rm -f "$stamp_file"
    local py="$venv/bin/python"
    # pip learnt dependency groups (--group) in 25.1; upgrade only an older pip.
    if ! "$py" -c "
import sys
from importlib.metadata import version
have = tuple(int(p) for p in version('pip').split('.')[:2])
sys.exit(have < (${MIN_PIP/./, }))
"; then
        "$py" -m pip install --quiet --upgrade "pip>=$MIN_PIP" || return 1
    fi
    local -a group_args=()
    local group
    for group in "${DEP_GROUPS[@]}"; do group_args+=(--group "$group"); done
    # One resolve, so every dependency is chosen under the Django pin.
    (cd "$ROOT" && "$py" -m pip install --quiet --upgrade --upgrade-strategy only-if-needed \
        -e ".[$EXTRAS]" "${group_args[@]}" "$(django_spec "$version")") || return 1
    "$py" -m pip check >&2 || log "warning: pip check reports conflicts in $venv."
    printf '%s\n' "$stamp" >"$stamp_file" || return 1
    log "$venv ready ($(venv_versions "$venv"))"
}

venv_versions() {
    "$1/bin/python" -c 'import django, sys; print("Python", sys.version.split()[0], "+ Django", django.get_version())'
}

# --- running ---------------------------------------------------------------------------------

ensure_system_packages
ensure_services

if ((SETUP_ONLY)); then
    ((${#UNAVAILABLE_DBS[@]} == 0)) || die "not reachable: ${UNAVAILABLE_DBS[*]}."
    for version in "${PYTHONS[@]}"; do
        setup_venv "$version" || die "building the Python $version venv failed."
    done
    log "Setup done."
    exit 0
fi

declare -a RESULT_NAMES=() RESULT_TEXTS=()
FAILED=0
SQLITE_TMPDIR=""
START_ALL=$SECONDS

record() {
    RESULT_NAMES+=("$1")
    RESULT_TEXTS+=("$2")
    [[ "$3" == 0 ]] || FAILED=1
}

run_combination() {
    local version="$1" db="$2" label="$3" venv rc=0
    venv="$(venv_dir "$version")"
    local -a env_vars=(
        "PATH=$venv/bin:$PATH"
        "VIRTUAL_ENV=$venv"
        "PLAYWRIGHT_CHROMIUM_EXECUTABLE=${PLAYWRIGHT_CHROMIUM_EXECUTABLE:-$CHROMIUM}"
    )
    case "$db" in
        sqlite)
            SQLITE_TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/django_jobs-sqlite.XXXXXX")"
            env_vars+=(
                "DATABASE_URL=sqlite:///$SQLITE_TMPDIR/django_jobs.sqlite3"
                "DJANGO_JOBS_SQLITE_DIR=$SQLITE_TMPDIR"
            )
            ;;
        postgres) env_vars+=("DATABASE_URL=$POSTGRES_URL") ;;
        mariadb) env_vars+=("DATABASE_URL=$MARIADB_URL") ;;
        pgbouncer)
            env_vars+=(
                "DATABASE_URL=$PGBOUNCER_URL"
                "DJANGO_JOBS_PGBOUNCER_DIRECT_URL=$POSTGRES_URL"
                "DJANGO_JOBS_TEST_DB_SUFFIX=$PGBOUNCER_SUFFIX"
            )
            ;;
    esac
    local -a pytest_args=(${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"})
    if [[ "$db" == pgbouncer ]]; then
        # PgBouncer keeps idle server connections to the test database, so pytest-django's
        # DROP DATABASE through it fails: the database is kept (--reuse-db) and dropped here,
        # on PostgreSQL itself, before and after.
        drop_pgbouncer_test_db "$venv" || return 1
        pytest_args=(--reuse-db ${pytest_args[@]+"${pytest_args[@]}"})
        has_test_paths || pytest_args+=("${PGBOUNCER_TESTS[@]}")
    fi
    printf '\n==> %s\n' "$label" >&2
    # Variables the tests hand to worker subprocesses must not leak in from the caller.
    env -u DJANGO_JOBS_USE_TEST_DB -u DJANGO_JOBS_TEST_DB_NAME -u DJANGO_SETTINGS_MODULE \
        -u DJANGO_JOBS_PGBOUNCER_DIRECT_URL -u DJANGO_JOBS_LISTEN_DATABASE \
        "${env_vars[@]}" "$venv/bin/python" -m pytest ${pytest_args[@]+"${pytest_args[@]}"} \
        || rc=$?
    remove_sqlite_tmpdir
    if [[ "$db" == pgbouncer ]]; then
        drop_pgbouncer_test_db "$venv" || true
    fi
    return "$rc"
}

# The PgBouncer runs' own test database, apart from the postgres runs' one.
PGBOUNCER_SUFFIX="${DJANGO_JOBS_TEST_DB_SUFFIX:-pgbouncer}"

drop_pgbouncer_test_db() {
    "$1/bin/python" - "test_postgres_$PGBOUNCER_SUFFIX" <<'PY'
import sys

import psycopg
from psycopg import sql

with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
    conn.autocommit = True
    # WITH (FORCE) ends the sessions PgBouncer still holds to it (PostgreSQL 13 and later).
    name = sql.Identifier(sys.argv[1])
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
PY
}

# True if the pytest options after -- name tests (a path), not only options.
has_test_paths() {
    local arg
    for arg in ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}; do
        [[ "$arg" != -* && -e "${arg%%::*}" ]] && return 0
    done
    return 1
}

remove_sqlite_tmpdir() {
    if [[ -n "$SQLITE_TMPDIR" ]]; then
        rm -rf "$SQLITE_TMPDIR"
        SQLITE_TMPDIR=""
    fi
}

print_summary() {
    local i
    printf '\n%-50s %s\n' "Combination" "Result"
    printf '%-50s %s\n' "-----------" "------"
    for i in "${!RESULT_NAMES[@]}"; do
        printf '%-50s %s\n' "${RESULT_NAMES[$i]}" "${RESULT_TEXTS[$i]}"
    done
    printf '\nTotal time: %ss\n' "$((SECONDS - START_ALL))"
}

# pytest exits by itself on Ctrl-C; without this trap the loop would go on to the next one.
# shellcheck disable=SC2317  # called by the trap
interrupted() {
    remove_sqlite_tmpdir
    stop_pgbouncer
    print_summary
    printf 'Interrupted.\n'
    exit 130
}
trap interrupted INT TERM
trap stop_pgbouncer EXIT

for version in "${PYTHONS[@]}"; do
    django_version=""
    if setup_venv "$version"; then
        django_version="$("$(venv_dir "$version")/bin/python" -c 'import django; print(django.get_version())')"
    fi
    for db in "${DBS[@]}"; do
        # Unless --db names it, the PgBouncer subset runs on one Python: it tests the pooler,
        # which the Python and Django lines do not change.
        if [[ "$db" == pgbouncer ]] && ((!PGBOUNCER_NAMED)) \
            && [[ " ${PGBOUNCER_DEFAULT_PYTHONS[*]} " != *" $version "* ]]; then
            continue
        fi
        label="Python $version + Django ${django_version:-?} on $db"
        if [[ -z "$django_version" ]]; then
            record "$label" "FAILED: venv setup failed" 1
            continue
        fi
        if ! db_available "$db"; then
            record "$label" "FAILED: $db not reachable" 1
            continue
        fi
        started=$SECONDS
        rc=0
        run_combination "$version" "$db" "$label" || rc=$?
        elapsed="$((SECONDS - started))s"
        case "$rc" in
            0) record "$label" "passed ($elapsed)" 0 ;;
            5) record "$label" "FAILED: no tests collected ($elapsed)" 1 ;;
            *) record "$label" "FAILED: pytest exit $rc ($elapsed)" 1 ;;
        esac
    done
done

print_summary
if ((FAILED)); then
    printf 'Some combinations FAILED.\n'
    exit 1
fi
printf 'All combinations passed.\n'
