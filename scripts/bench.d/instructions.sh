# Sourced by scripts/bench. Instructions per token, counted by callgrind: the one figure of the
# token path that this machine's noise does not move, so a run compares with the last one to
# the instruction. The observability row's two configurations (metrics off and no audit;
# metrics on and an audit file) each serve local users for $cg_secs s under callgrind with one
# tokio worker (valgrind runs one thread at a time; a second worker would add only the
# instructions of stealing work), instrumented only while wrk runs. What it cannot see: the
# kernel (TCP, the audit file's writes) and the cache, which the rate rows include.
cg_secs=10
command -v valgrind >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq valgrind >/dev/null; } ||
  { echo "bench: valgrind missing" >&2; exit 1; }

# Instructions and requests of one configuration, into cg_total and cg_requests. Run in this
# shell, not a subshell, so that the exit trap stops valgrind if this fails half-way.
cg_count() {
  local name=$1 config=$2
  local port; port=$(free_port)
  TOKEN_ISSUER_LOG=warn TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$tmp/cg.$name" "$bin" serve --config "$config" --listen "127.0.0.1:$port" \
    2>"$tmp/cg.$name.err" & local pid=$!
  pids+=("$pid")
  # Valgrind starts the binary slowly: up to 60 s.
  wait_up "http://127.0.0.1:$port/healthz" 1200
  local u="http://127.0.0.1:$port/v1/registry?service=bench&scope=repository:org/app:pull,push"
  for i in $(seq 1 $users); do
    curl -fs -u "$(cred local "$i")" "$u" >/dev/null || { echo "bench: warm-up under valgrind failed" >&2; exit 1; }
  done
  callgrind_control --instr=on "$pid" >/dev/null 2>&1
  local out; out=$(wrk -t1 -c2 -d"${cg_secs}s" -s "$tmp/local.lua" "$u")
  callgrind_control --instr=off "$pid" >/dev/null 2>&1
  callgrind_control --dump "$pid" >/dev/null 2>&1
  stop_issuers "$pid"
  if grep -q 'Non-2xx' <<<"$out"; then echo "$out" >&2; echo "bench: errors under valgrind" >&2; exit 1; fi
  cg_total=$(awk '/^totals:/ {print $2}' "$tmp/cg.$name.1" 2>/dev/null)
  if [ -z "$cg_total" ] || [ "$cg_total" = 0 ]; then tail -5 "$tmp/cg.$name.err" >&2; echo "bench: callgrind counted nothing" >&2; exit 1; fi
  cg_requests=$(awk '/requests in/ {print $1}' <<<"$out")
}

lua local
sed 's#^path = "audit/audit.log"$#path = "audit/audit-cg.log"#' "$tmp/issuer-obs-on.toml" > "$tmp/issuer-cg-on.toml"
cg_count off "$tmp/issuer-obs-off.toml"
cg_off_ir=$cg_total cg_off_n=$cg_requests
cg_count on "$tmp/issuer-cg-on.toml"
cg_on_ir=$cg_total cg_on_n=$cg_requests
read -r cg_off cg_on cg_audit < <(awk -v a="$cg_off_ir" -v n="$cg_off_n" -v b="$cg_on_ir" -v m="$cg_on_n" \
  'BEGIN {x = a / n; y = b / m; printf "%.0f %.0f %.4f\n", x, y, (y - x) / y}')
echo "instructions per token (callgrind, user space, one worker; $cg_off_n and $cg_on_n tokens)"
printf '  %-44s %s\n' "local users, metrics off, no audit" "$cg_off"
printf '  %-44s %s   (metrics + audit: %s%% of them)\n' "local users, metrics on + audit file" "$cg_on" "$(awk -v s="$cg_audit" 'BEGIN {printf "%.1f", s * 100}')"
fig instructions.off_per_token "$cg_off"
fig instructions.on_per_token "$cg_on"
fig instructions.observability_share "$cg_audit"
