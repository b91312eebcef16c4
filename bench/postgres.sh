#!/bin/sh
# A private PostgreSQL server for the benchmarks, with the server's default durability (fsync on,
# synchronous_commit on: a commit is on disk when it returns, as SQLite's synchronous=FULL).
#   bench/postgres.sh start DIR   initdb + start in DIR (as the postgres user when run as root),
#                                 prints the store URL (--store) of an empty database on stdout
#   bench/postgres.sh url DIR     prints a fresh, empty database's URL again
#   bench/postgres.sh stop DIR    fast shutdown, removes nothing
set -eu
cmd=${1:?usage: bench/postgres.sh start|url|stop DIR}
dir=${2:?usage: bench/postgres.sh start|url|stop DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$bin/postgres" ] || { echo "PostgreSQL server binaries not found: apt-get install -y postgresql" >&2; exit 69; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi; }
port_file="$dir/port"
case "$cmd" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U escrow --auth=trust --no-locale -E UTF8 >"$dir/initdb.log"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "$port" >"$port_file"
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
  "$0" url "$dir"
  ;;
url)
  port=$(cat "$port_file")
  db="bench_$(date +%s%N)"
  "$bin/psql" -q -h "$dir" -p "$port" -U escrow -d postgres -c "CREATE DATABASE $db" >/dev/null
  echo "postgresql://escrow@/$db?host=$dir&port=$port"
  ;;
stop)
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
*) echo "usage: bench/postgres.sh start|url|stop DIR" >&2; exit 64 ;;
esac
