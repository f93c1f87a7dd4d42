#!/bin/sh
# pg_server: Debian's PostgreSQL 15 as the field's server, run as the postgres user.
#
#   pg_server.sh init DIR PORT      creates a cluster in DIR/data (trust authentication, a Unix
#                                   socket in DIR only) and loads pgbench's tables at scale 1
#   pg_server.sh run DIR PORT SYNC  runs the postmaster in the foreground (exec: this pid is the
#                                   server's) with synchronous_commit=SYNC, until SIGTERM
set -eu
mode=$1
dir=$2
port=$3
bin=/usr/lib/postgresql/15/bin
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
case $mode in
init)
    mkdir -p "$dir/data"
    chown postgres: "$dir" "$dir/data"
    chmod 0700 "$dir/data"
    as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
    as_postgres "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=" \
        -l "$dir/init.log" -w start >/dev/null
    as_postgres "$bin/pgbench" -i -s 1 -q -h "$dir" -p "$port" -U postgres postgres \
        >/dev/null 2>&1
    as_postgres "$bin/pg_ctl" -D "$dir/data" -w stop >/dev/null
    ;;
run)
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
        "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses= \
        -c synchronous_commit="$4"
    ;;
*)
    echo "usage: pg_server.sh init DIR PORT | run DIR PORT SYNC" >&2
    exit 2
    ;;
esac
