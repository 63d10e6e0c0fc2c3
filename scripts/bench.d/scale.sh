# Sourced by scripts/bench. Store size: a store of 100 users against one of $scale_n
# (default 1,000,000), on SQLite and on PostgreSQL, both loaded in bulk with SQL. For each, a
# cold login's database time (examples/store_scale.rs: one account read at a time, the median
# of $scale_lookups over the whole range) and, on SQLite, a warm token's issuer CPU (the token
# rows' store users, store1..store16; the median of 3 runs of 3 s). Targets: the large store
# within 1.2x the small.
scale_n=${BENCH_SCALE_N:-1000000}
scale_lookups=${BENCH_SCALE_LOOKUPS:-20000}
scale_dir="$tmp/scale"
mkdir -p "$scale_dir"
# store1..store16 with bcrypt cost-4 hashes of pw-<i> (the warm row's credentials); every
# other user a generated secret's keyed hash. One statement per size, all in one transaction.
scale_hashes() { # prints "i hash" for i in 1..16
  local i h
  for i in $(seq 1 $users); do h=$(echo "pw-$i" | "$bin" htpasswd --cost 4 x); echo "$i ${h#x:}"; done
}
scale_hashes > "$scale_dir/hashes"
scale_sql() { # $1 = users; SQL that fills a migrated store (SQLite's and PostgreSQL's dialects agree)
  local t; t=$(date +%s)
  echo "BEGIN;"
  echo "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)"
  echo "INSERT INTO users (name, password_hash, admin, disabled, created_at, updated_at, fold)"
  echo "SELECT 'store' || i, '\$tis1\$000000000000\$unused', 0, 0, $t, $t, 'store' || i FROM n;"
  while read -r i h; do echo "UPDATE users SET password_hash = '$h' WHERE name = 'store$i';"; done < "$scale_dir/hashes"
  echo "INSERT INTO user_groups (name, created_at, fold) VALUES ('fleet', $t, 'fleet');"
  echo "INSERT INTO members (group_name, user_name) SELECT 'fleet', name FROM users;"
  echo "COMMIT;"
}
scale_config() { # $1 = store URL -> the config on stdout
  bench_token_keys
  printf '[store]\nurl = "%s"\n[[acl]]\ngroup = "fleet"\nname = "**"\nactions = ["pull", "push"]\n' "$1"
}
declare -A scale_db scale_cpu
# SQLite: a file per size.
for n in 100 "$scale_n"; do
  scale_config "sqlite://scale-$n.db" > "$tmp/scale-$n.toml"
  "$bin" users list --config "$tmp/scale-$n.toml" >/dev/null
  scale_sql "$n" | python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.stdin.read()); c.close()' "$tmp/scale-$n.db"
  scale_db[sqlite_$n]=$(target/release/examples/store_scale "sqlite://scale-$n.db" "$tmp" store "$n" "$scale_lookups")
  scale_port=$(free_port)
  TOKEN_ISSUER_LOG=warn "$bin" serve --config "$tmp/scale-$n.toml" --listen "127.0.0.1:$scale_port" & pids+=($!)
  scale_pid=$!
  wait_up "http://127.0.0.1:$scale_port/healthz"
  url="http://127.0.0.1:$scale_port/v1/registry?service=bench&scope=repository:org/app:pull,push"
  scale_runs=$(for _ in 1 2 3; do (secs=3; run store) | awk '{print $3}'; done | sort -g)
  [ "$(wc -w <<<"$scale_runs")" = 3 ] || { echo "bench: store-size row: a warm run failed ($scale_runs)" >&2; exit 1; }
  scale_cpu[$n]=$(sed -n 2p <<<"$scale_runs")
  stop_issuers "$scale_pid"
done
url=$url_with_x5c
# PostgreSQL: a server of its own (as the postgres user when run as root: initdb refuses root),
# a database per size.
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -1 || true)
[ -x "$pg_bin/initdb" ] || { echo "bench: store-size rows: no PostgreSQL in /usr/lib/postgresql (apt-get install postgresql)" >&2; exit 1; }
pg_port=$(free_port)
pg_as=()
# The postgres user must reach its directory, not read the bench's keys beside it.
[ "$(id -u)" = 0 ] && { pg_as=(runuser -u postgres --); chown postgres "$scale_dir"; chmod 711 "$tmp"; }
"${pg_as[@]}" "$pg_bin/initdb" -U postgres --auth=trust -E UTF8 -D "$scale_dir/pg" >/dev/null
"${pg_as[@]}" "$pg_bin/postgres" -D "$scale_dir/pg" -h 127.0.0.1 -p "$pg_port" -k "$scale_dir" >"$scale_dir/pg.log" 2>&1 & pids+=($!)
for _ in $(seq 1 400); do "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break; sleep 0.05; done
for n in 100 "$scale_n"; do
  "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE scale$n" postgres
  pg_url="postgres://postgres@127.0.0.1:$pg_port/scale$n"
  scale_config "$pg_url" > "$tmp/scale-pg-$n.toml"
  "$bin" users list --config "$tmp/scale-pg-$n.toml" >/dev/null
  scale_sql "$n" | "$pg_bin/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "scale$n" >/dev/null
  "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "ANALYZE" "scale$n"
  scale_db[postgres_$n]=$(target/release/examples/store_scale "$pg_url" "$tmp" store "$n" "$scale_lookups")
done
echo "store size: $scale_n users against 100 (loaded in bulk), a cold login's account read (median, p90 of $scale_lookups) and a warm token's CPU"
for db in sqlite postgres; do
  read -r small small90 <<<"${scale_db[${db}_100]}"
  read -r large large90 <<<"${scale_db[${db}_$scale_n]}"
  printf '  %-44s %s us (p90 %s) against %s us (p90 %s)   (%s x; target <= 1.2)\n' "$db: account read" "$large" "$large90" "$small" "$small90" "$(ratio "$large" "$small")"
  fig "scale.$db.read_us_large" "$large"
  fig "scale.$db.read_us_small" "$small"
  fig "scale.$db.read_ratio" "$(ratio "$large" "$small")"
done
printf '  %-44s %s us against %s us   (%s x; target <= 1.2)\n' "sqlite: warm token, issuer CPU" "${scale_cpu[$scale_n]}" "${scale_cpu[100]}" "$(ratio "${scale_cpu[$scale_n]}" "${scale_cpu[100]}")"
fig scale.warm_cpu_us_large "${scale_cpu[$scale_n]}"
fig scale.warm_cpu_us_small "${scale_cpu[100]}"
fig scale.warm_cpu_ratio "$(ratio "${scale_cpu[$scale_n]}" "${scale_cpu[100]}")"
