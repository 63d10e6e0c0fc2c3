# Sourced by scripts/bench. Cost as the work grows: the issuer's CPU per warm token (local
# users, as the token rows measure it) with 10, 1,000 and 10,000 [[acl]] rules (the matching
# rule last, the others of a team's realistic shape), and with 1, 4 and 16 scopes in one
# request; and the start-up time with 10,000 rules. Median of $growth_rounds rounds of 3 s.
growth_rounds=${BENCH_GROWTH_ROUNDS:-3}
declare -A growth_port growth_start growth_t0
growth_issuer() { # $1 = rules; sets growth_port[$1]; the issuer's pid joins $pids
  local n=$1 port
  port=$(free_port)
  growth_port[$n]=$port
  {
    bench_token_keys
    printf '[identity]\nhtpasswd = "users.htpasswd"\n'
    for i in $(seq 1 $((n - 1))); do
      printf '[[acl]]\naccount = "team%d-*"\nname = "team%d/**"\nactions = ["pull", "push"]\n' "$i" "$i"
    done
    printf '[[acl]]\naccount = "local*"\nname = "**"\nactions = ["pull", "push"]\n'
  } > "$tmp/growth-$n.toml"
  # From here: the start-up alone, not the writing of the config above.
  growth_t0[$n]=$(date +%s.%N)
  TOKEN_ISSUER_LOG=warn "$bin" serve --config "$tmp/growth-$n.toml" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pids+=($!)
}
growth_cpu() { # $1 = url; prints the median CPU per token (us) over the rounds
  local r
  for r in $(seq 1 "$growth_rounds"); do
    url=$1
    (secs=3; run local) | awk '{print $3}'
  done | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}
scopes() { # $1 = count; the query's scopes
  local i
  for i in $(seq 1 "$1"); do printf '&scope=repository:org/app%d:pull,push' "$i"; done
}
for n in 10 1000 10000; do
  growth_issuer "$n"
  for _ in $(seq 1 2000); do curl -fs "http://127.0.0.1:${growth_port[$n]}/healthz" >/dev/null 2>&1 && break; sleep 0.005; done
  growth_start[$n]=$(awk -v a="${growth_t0[$n]}" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}')
done
declare -A growth_cpu_rules growth_cpu_scopes
for n in 10 1000 10000; do
  growth_cpu_rules[$n]=$(growth_cpu "http://127.0.0.1:${growth_port[$n]}/v1/registry?service=bench$(scopes 1)")
done
for k in 1 4 16; do
  growth_cpu_scopes[$k]=$(growth_cpu "http://127.0.0.1:${growth_port[10]}/v1/registry?service=bench$(scopes "$k")")
done
url=$url_with_x5c
echo "cost as the work grows: issuer CPU per warm token (local users, x5c never), median of $growth_rounds rounds"
for n in 10 1000 10000; do
  printf '  %-44s %s us   (%s x the 10-rule cost)\n' "$n [[acl]] rules, the matching one last" "${growth_cpu_rules[$n]}" "$(ratio "${growth_cpu_rules[$n]}" "${growth_cpu_rules[10]}")"
  fig "growth.rules_$n.cpu_us" "${growth_cpu_rules[$n]}"
done
printf '  %-44s %s   (target <= 1.5)\n' "  10,000 rules / 10 rules" "$(ratio "${growth_cpu_rules[10000]}" "${growth_cpu_rules[10]}")"
printf '  %-44s %s s   (target < 1; 10 rules: %s s)\n' "  start-up with 10,000 rules" "${growth_start[10000]}" "${growth_start[10]}"
fig growth.startup_10000_rules_s "${growth_start[10000]}"
for k in 1 4 16; do
  printf '  %-44s %s us   (%s x one scope)\n' "$k scope(s) in one request" "${growth_cpu_scopes[$k]}" "$(ratio "${growth_cpu_scopes[$k]}" "${growth_cpu_scopes[1]}")"
  fig "growth.scopes_$k.cpu_us" "${growth_cpu_scopes[$k]}"
done
