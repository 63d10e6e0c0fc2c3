# Sourced by scripts/bench. The cold roll-out: $cold_n credentials the issuer has never seen
# (a fleet's devices or a CI fleet's robots, each with its own secret), each asking for a token
# once, $cold_conns at a time, against a freshly started issuer. Each needs one bcrypt
# verification or one upstream call, so the wall time has a floor the issuer cannot beat:
#   htpasswd:  n x (one bcrypt verify, measured now) / cores
#   upstream:  delay x ceil(calls / upstream.max_concurrent)
# and the rows report the wall time as a ratio of that floor (1.0 = bound by bcrypt or the
# upstream alone). Meanwhile other, warm users keep asking at a modest rate: their p99 says
# whether a roll-out starves everyone else.
cold_n=${BENCH_COLD_N:-1000}
fleet_n=${BENCH_FLEET_N:-10000}
cold_upstream_concurrent=64   # the default of upstream.max_concurrent, written out
cores=$(nproc)

# One bcrypt (cost 10) hash for every cold user: each user:password pair is still a
# credential the issuer has never seen (its cache is keyed by the pair) and costs one full
# verification; a distinct hash each would only make this setup take a minute.
hash=$(echo cold-pw | "$bin" htpasswd --cost 10 x); hash=${hash#x:}
{ cat "$tmp/users.htpasswd"; for i in $(seq 1 $((cold_n + 8))); do echo "cold$i:$hash"; done; } > "$tmp/cold.htpasswd"
cold_port=$(free_port)
{ bench_token_keys; cat <<TOML
[identity]
htpasswd = "cold.htpasswd"
# Room for the fleet row's devices beside the other rows' users: a cache smaller than the
# fleet would forget devices within their lifetime and ask the API again.
cache_capacity = $((fleet_n * 2 + cold_n * 4))
[upstream]
url = "http://127.0.0.1:$up_port/whoami"
username_pointer = "/username"
max_concurrent = $cold_upstream_concurrent
[upstream.repository]
url = "http://127.0.0.1:$up_port/repository/{name}"
[[acl]]
account = "local*"
name = "**"
actions = ["pull", "push"]
[[acl]]
account = "cold*"
name = "**"
actions = ["pull", "push"]
[[acl]]
account = "up*"
name = "**"
actions = ["upstream"]
TOML
} > "$tmp/cold.toml"
TOKEN_ISSUER_LOG=warn "$bin" serve --config "$tmp/cold.toml" --listen "127.0.0.1:$cold_port" & pids+=($!)
cold_pid=$!
wait_up "http://127.0.0.1:$cold_port/healthz"
cold_url="http://127.0.0.1:$cold_port/v1/registry?service=bench&scope=repository:org/app:pull,push"

# Warm users at a modest, steady rate (4 connections, 10 ms apart each) while a cold run goes:
# the local users' script with a delay.
lua local
{ cat "$tmp/local.lua"; echo 'delay = function() return 10 end'; } > "$tmp/warm.lua"
for i in $(seq 1 $users); do curl -fs -u "local$i:pw-$i" "$cold_url" >/dev/null; done

# One verification, measured now through the issuer itself: 8 more never-seen users, one at a
# time; the median request time (a request without bcrypt takes ~0.1 ms of it).
bcrypt_s=$(for i in $(seq $((cold_n + 1)) $((cold_n + 8))); do
  curl -fs -o /dev/null -w '%{time_total}\n' -u "cold$i:cold-pw" "$cold_url"
done | sort -g | sed -n 4p)
bcrypt_floor=$(awk -v n="$cold_n" -v t="$bcrypt_s" -v c="$cores" 'BEGIN {printf "%.3f", n*t/c}')
for i in $(seq 1 "$cold_n"); do echo "cold$i:cold-pw"; done | cold_config "$tmp/cold-local.curl"
warm_secs=$(awk -v f="$bcrypt_floor" 'BEGIN {s=int(f*0.8); print (s<1)?1:s}')
wrk -t1 -c4 -d"${warm_secs}s" --latency -s "$tmp/warm.lua" "$cold_url" > "$tmp/warm.out" 2>&1 &
warm_pid=$!
read -r cold_local_s cold_local_ok < <(cold_run "$tmp/cold-local.curl")
wait "$warm_pid" || true
warm_p99=$(awk '$1=="99%" {print $2}' "$tmp/warm.out")
warm_rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/warm.out")
grep -q 'Non-2xx' "$tmp/warm.out" && { cat "$tmp/warm.out" >&2; echo "bench: warm users were refused during the roll-out" >&2; exit 1; }
[ "$cold_local_ok" = "$cold_n" ] || { echo "bench: only $cold_local_ok of $cold_n cold htpasswd logins got a token" >&2; exit 1; }

upstream_counts() { # $1 $2 = /count answers before and after -> "identity repository"
  python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(b["whoami"] - a["whoami"], b["repository"] - a["repository"])' "$1" "$2"
}
# Upstream API keys: user upc<i> with key key-c<i> (the stand-in answers "upc<i>").
up_delay_ms=20
before=$(curl -fs "http://127.0.0.1:$up_port/count")
for i in $(seq 1 "$cold_n"); do echo "upc$i:key-c$i"; done | cold_config "$tmp/cold-up.curl"
read -r cold_up_s cold_up_ok < <(cold_run "$tmp/cold-up.curl")
after=$(curl -fs "http://127.0.0.1:$up_port/count")
read -r cold_whoami cold_repo < <(upstream_counts "$before" "$after")
[ "$cold_up_ok" = "$cold_n" ] || { echo "bench: only $cold_up_ok of $cold_n cold upstream logins got a token" >&2; exit 1; }
# Each request makes its identity call, then its repository call: two rounds of the semaphore.
up_floor=$(awk -v d="$up_delay_ms" -v w="$cold_whoami" -v r="$cold_repo" -v c="$cold_upstream_concurrent" \
  'function ceil(x) {return (x == int(x)) ? x : int(x) + 1} BEGIN {printf "%.3f", d/1000*(ceil(w/c) + ceil(r/c))}')

# A fleet's roll-out: $fleet_n devices, each with its own API key (upf<i>, key-f<i>), asking
# once; then every one again, within the cache's lifetime (upstream.cache_ttl_seconds, 60 s).
# The API must see exactly one identity and one repository call per device, none the second
# time; the issuer's CPU per new device is printed.
for i in $(seq 1 "$fleet_n"); do echo "upf$i:key-f$i"; done | cold_config "$tmp/fleet.curl"
hz=$(getconf CLK_TCK)
c0=$(curl -fs "http://127.0.0.1:$up_port/count"); t0=$(awk '{print $14+$15}' "/proc/$cold_pid/stat")
read -r fleet_s fleet_ok < <(cold_run "$tmp/fleet.curl")
t1=$(awk '{print $14+$15}' "/proc/$cold_pid/stat"); c1=$(curl -fs "http://127.0.0.1:$up_port/count")
read -r fleet_again_s fleet_again_ok < <(cold_run "$tmp/fleet.curl")
c2=$(curl -fs "http://127.0.0.1:$up_port/count")
read -r fleet_whoami fleet_repo < <(upstream_counts "$c0" "$c1")
read -r fleet_again_whoami fleet_again_repo < <(upstream_counts "$c1" "$c2")
fleet_cpu=$(awk -v a="$t0" -v b="$t1" -v n="$fleet_n" -v hz="$hz" 'BEGIN {printf "%.3f", (b-a)*1000/hz/n}')
[ "$fleet_ok" = "$fleet_n" ] && [ "$fleet_again_ok" = "$fleet_n" ] ||
  { echo "bench: fleet row: $fleet_ok and $fleet_again_ok of $fleet_n devices got a token" >&2; exit 1; }

echo "cold roll-out: $cold_n never-seen credentials, each asked once, $cold_conns connections; ratio = wall time / floor (target <= 1.2 bcrypt, <= 1.5 upstream)"
printf '  %-44s %s s   (one verify %s s x %s / %s cores = %s s floor)\n' "htpasswd, bcrypt cost 10" "$cold_local_s" "$bcrypt_s" "$cold_n" "$cores" "$bcrypt_floor"
printf '  %-44s %s\n' "  ratio to the bcrypt floor" "$(ratio "$cold_local_s" "$bcrypt_floor")"
printf '  %-44s %s tokens/s, p99 %s   (target p99 < 50ms)\n' "  warm users meanwhile (4 conns, 10ms apart)" "$warm_rps" "$warm_p99"
printf '  %-44s %s s   (%s ms answers, max_concurrent %s: floor %s s)\n' "upstream API keys" "$cold_up_s" "$up_delay_ms" "$cold_upstream_concurrent" "$up_floor"
printf '  %-44s %s\n' "  ratio to the upstream floor" "$(ratio "$cold_up_s" "$up_floor")"
printf '  %-44s %s identity + %s repository   (exactly %s each expected)\n' "  upstream calls made" "$cold_whoami" "$cold_repo" "$cold_n"
fleet_floor=$(awk -v d="$up_delay_ms" -v n="$fleet_n" -v c="$cold_upstream_concurrent" \
  'function ceil(x) {return (x == int(x)) ? x : int(x) + 1} BEGIN {printf "%.3f", d/1000*2*ceil(n/c)}')
printf '  %-44s %s s   (floor %s s: ratio %s; %s ms CPU per new device)\n' "fleet of $fleet_n devices, upstream API keys" "$fleet_s" "$fleet_floor" "$(ratio "$fleet_s" "$fleet_floor")" "$fleet_cpu"
printf '  %-44s %s identity + %s repository   (exactly %s each expected)\n' "  upstream calls made" "$fleet_whoami" "$fleet_repo" "$fleet_n"
printf '  %-44s %s s, %s identity + %s repository calls   (none expected)\n' "  every device again, within the cache TTL" "$fleet_again_s" "$fleet_again_whoami" "$fleet_again_repo"
fig cold.fleet.seconds "$fleet_s"
fig cold.fleet.ratio "$(ratio "$fleet_s" "$fleet_floor")"
fig cold.fleet.cpu_ms_per_device "$fleet_cpu"
fig cold.fleet.identity_calls "$fleet_whoami"
fig cold.fleet.repository_calls "$fleet_repo"
fig cold.fleet.again_seconds "$fleet_again_s"
fig cold.fleet.again_calls "$((fleet_again_whoami + fleet_again_repo))"
fig cold.htpasswd.seconds "$cold_local_s"
fig cold.htpasswd.bcrypt_verify_seconds "$bcrypt_s"
fig cold.htpasswd.floor_seconds "$bcrypt_floor"
fig cold.htpasswd.ratio "$(ratio "$cold_local_s" "$bcrypt_floor")"
fig cold.htpasswd.warm_p99 "$warm_p99"
fig cold.htpasswd.warm_rps "$warm_rps"
fig cold.upstream.seconds "$cold_up_s"
fig cold.upstream.floor_seconds "$up_floor"
fig cold.upstream.ratio "$(ratio "$cold_up_s" "$up_floor")"
fig cold.upstream.identity_calls "$cold_whoami"
fig cold.upstream.repository_calls "$cold_repo"
