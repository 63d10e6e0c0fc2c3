# Sourced by scripts/bench. Cold LDAP logins: $ldap_cold_n directory users the issuer has never
# seen, each asking for a token once ($cold_conns at a time), against a freshly started issuer
# (ldap.pool_size at its default, 8). Each login is a user search, the user's bind, the service
# account's bind again and a group search. The baseline is the directory's own bind rate,
# measured now with ldapwhoami (a process, a connection, a bind and a whoami each), 16 at a time.
ldap_wall() { # $1 = start time from date +%s.%N -> seconds since
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b-a}'
}
t0=$(date +%s.%N)
seq 1 "$ldap_cold_n" | xargs -P 16 -I{} ldapwhoami -x -H "$ldap_url" -D "uid=ldapc{},ou=people,$ldap_base" -w "pw-c{}" >/dev/null ||
  { echo "bench: ldapwhoami failed" >&2; exit 1; }
whoami_s=$(ldap_wall "$t0")
whoami_rate=$(awk -v n="$ldap_cold_n" -v s="$whoami_s" 'BEGIN {printf "%.0f", n/s}')

ldap_cold_port=$(free_port)
{
  bench_token_keys
  ldap_section
  printf '[[acl]]\ngroup = "bench"\nname = "**"\nactions = ["pull", "push"]\n'
} > "$tmp/ldap-cold.toml"
TOKEN_ISSUER_LOG=warn "$bin" serve --config "$tmp/ldap-cold.toml" --listen "127.0.0.1:$ldap_cold_port" & ldap_cold_pid=$!; pids+=($ldap_cold_pid)
wait_up "http://127.0.0.1:$ldap_cold_port/healthz"
cold_url="http://127.0.0.1:$ldap_cold_port/v1/registry?service=bench&scope=repository:org/app:pull,push"
for i in $(seq 1 "$ldap_cold_n"); do echo "ldapc$i:pw-c$i"; done | cold_config "$tmp/cold-ldap.curl"
read -r cold_ldap_s cold_ldap_ok < <(cold_run "$tmp/cold-ldap.curl")
[ "$cold_ldap_ok" = "$ldap_cold_n" ] || { echo "bench: only $cold_ldap_ok of $ldap_cold_n cold LDAP logins got a token" >&2; exit 1; }
cold_ldap_rate=$(awk -v n="$ldap_cold_n" -v s="$cold_ldap_s" 'BEGIN {printf "%.0f", n/s}')
stop_issuers "$ldap_cold_pid"

echo "cold LDAP logins: $ldap_cold_n never-seen directory users, each asked once, $cold_conns connections"
printf '  %-44s %s binds/s   (%s in %s s, 16 at a time; baseline)\n' "slapd's bind rate (ldapwhoami)" "$whoami_rate" "$ldap_cold_n" "$whoami_s"
printf '  %-44s %s logins/s   (%s in %s s)\n' "cold LDAP logins through the issuer" "$cold_ldap_rate" "$ldap_cold_n" "$cold_ldap_s"
printf '  %-44s %s   (target >= 1.0)\n' "  ratio to the bind rate" "$(ratio "$cold_ldap_rate" "$whoami_rate")"
fig cold.ldap.whoami_binds_per_s "$whoami_rate"
fig cold.ldap.logins_per_s "$cold_ldap_rate"
fig cold.ldap.ratio "$(ratio "$cold_ldap_rate" "$whoami_rate")"
