#!/bin/sh
# Builds the field programs with plain `gcc -O2 -g -pthread` (no frame-pointer flags: the
# distribution default, which omits them at -O2) into $1 (default tests/field/bin).
# Rebuilds a program only when its sources are newer than the binary.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/bin}
mkdir -p "$out"
CC=${CC:-gcc}
CFLAGS="-O2 -g -pthread -Wall -Wextra"
headers="$here/src/field.h $here/src/field_msg.h"

# name:source[:extra flags]
programs="
unnamed_flusher:unnamed_flusher.c
named_flusher:unnamed_flusher.c:-DNAMED_THREADS
epoll_pool_srv:epoll_pool_srv.c
field_client:field_client.c
evloop_client:evloop_client.c
fsync_log:fsync_log.c
pipe_chain_srv:pipe_chain_srv.c
submilli_waits:submilli_waits.c
idle_hog:idle_hog.c
deploy_srv:deploy_srv.c
lock_convoy:lock_convoy.c
tcp_rpc_server:tcp_rpc_server.c
tcp_rpc_backend:tcp_rpc_backend.c
sleep_under_lock:sleep_under_lock.c
rwlock_readers:rwlock_readers.c
batching:batching.c
resp_client:resp_client.c
http_client:http_client.c
field_upstream:field_upstream.c
"

stale() { # binary sources...
    bin=$1
    shift
    [ -e "$bin" ] || return 0
    for f in "$@"; do
        [ "$f" -nt "$bin" ] && return 0
    done
    return 1
}

built=0
for entry in $programs; do
    name=${entry%%:*}
    rest=${entry#*:}
    src=${rest%%:*}
    extra=""
    [ "$rest" != "$src" ] && extra=${rest#*:}
    if stale "$out/$name" "$here/src/$src" $headers "$0"; then
        # shellcheck disable=SC2086
        $CC $CFLAGS $extra -o "$out/$name.tmp" "$here/src/$src" -lm
        mv "$out/$name.tmp" "$out/$name"
        built=$((built + 1))
    fi
done

# sqlite_client needs libsqlite3-dev (see apt-packages.txt); skipped without it.
if [ -e /usr/include/sqlite3.h ]; then
    if stale "$out/sqlite_client" "$here/src/sqlite_client.c" $headers "$0"; then
        $CC $CFLAGS -o "$out/sqlite_client.tmp" "$here/src/sqlite_client.c" -lsqlite3 -lm
        mv "$out/sqlite_client.tmp" "$out/sqlite_client"
        built=$((built + 1))
    fi
else
    echo "build.sh: /usr/include/sqlite3.h missing: sqlite_client not built" >&2
fi
# Scripts that drive Debian programs (the PostgreSQL outside check), installed beside them.
for script in pg_server.sh pgbench_client.py; do
    if stale "$out/$script" "$here/src/$script"; then
        cp "$here/src/$script" "$out/$script.tmp"
        chmod +x "$out/$script.tmp"
        mv "$out/$script.tmp" "$out/$script"
        built=$((built + 1))
    fi
done
echo "build.sh: $built program(s) built in $out" >&2
