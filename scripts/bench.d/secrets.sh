# Sourced by scripts/bench. Store robots with generated secrets (a keyed hash) against store
# robots with bcrypt passwords: the issuer's CPU per cold login of each, and the wall time of a
# roll-out of $secrets_n never-seen generated-secret robots against as many warm requests.
# The store is loaded in bulk with SQL (one secret and one bcrypt hash shared by every robot:
# each name is still a credential the issuer has never seen, costing one full check).
secrets_n=${BENCH_SECRETS_N:-10000}
secrets_bcrypt_n=${BENCH_SECRETS_BCRYPT_N:-500}
secrets_port=$(free_port)
openssl rand -base64 48 > "$tmp/pepper"
{ bench_token_keys; cat <<TOML
[store]
url = "sqlite://secrets.db"
pepper_files = ["pepper"]
[[acl]]
account = "robot*"
name = "**"
actions = ["pull", "push"]
TOML
} > "$tmp/secrets.toml"
"$bin" users list --config "$tmp/secrets.toml" >/dev/null
secret="tis_$(head -c 20 /dev/urandom | python3 -c 'import base64, sys; print(base64.b32encode(sys.stdin.buffer.read()).decode().lower())')"
bcrypt_hash=$(echo robot-pw | "$bin" htpasswd --cost 10 x); bcrypt_hash=${bcrypt_hash#x:}
# The stored forms as src/store/secrets.rs makes them.
python3 - "$tmp/secrets.db" "$tmp/pepper" "$secret" "$bcrypt_hash" "$secrets_n" "$secrets_bcrypt_n" <<'PY'
import base64, hashlib, hmac, sqlite3, sys, time
db, pepper_file, secret, bcrypt_hash, n, nb = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
key = open(pepper_file, "rb").read().strip()
pid = hashlib.sha256(b"token-issuer pepper id\0" + key).digest()[:6].hex()
mac = base64.urlsafe_b64encode(hmac.new(key, secret.encode(), hashlib.sha256).digest()).decode().rstrip("=")
keyed = f"$tis1${pid}${mac}"
t = int(time.time())
rows = [(f"robot-g{i}", keyed) for i in range(1, n + 2)] + [(f"robot-b{i}", bcrypt_hash) for i in range(1, nb + 2)]
con = sqlite3.connect(db)
con.executemany("INSERT INTO users (name, password_hash, admin, disabled, created_at, updated_at, fold) VALUES (?, ?, 0, 0, ?, ?, ?)",
                [(name, h, t, t, name) for name, h in rows])
con.commit()
PY
TOKEN_ISSUER_LOG=warn "$bin" serve --config "$tmp/secrets.toml" --listen "127.0.0.1:$secrets_port" & pids+=($!)
secrets_pid=$!
wait_up "http://127.0.0.1:$secrets_port/healthz"
cold_url="http://127.0.0.1:$secrets_port/v1/registry?service=bench&scope=repository:org/app:pull,push"
# A cold run's wall time and the issuer's CPU per request: "seconds ok cpu_ms".
secrets_run() { # $1 = curl config, $2 = requests
  local hz t0 t1 out
  hz=$(getconf CLK_TCK)
  t0=$(awk '{print $14+$15}' "/proc/$secrets_pid/stat")
  out=$(cold_run "$1")
  t1=$(awk '{print $14+$15}' "/proc/$secrets_pid/stat")
  echo "$out $(awk -v a="$t0" -v b="$t1" -v n="$2" -v hz="$hz" 'BEGIN {printf "%.4f", (b-a)*1000/hz/n}')"
}
for i in $(seq 1 "$secrets_bcrypt_n"); do echo "robot-b$i:robot-pw"; done | cold_config "$tmp/secrets-b.curl"
read -r sb_s sb_ok sb_cpu < <(secrets_run "$tmp/secrets-b.curl" "$secrets_bcrypt_n")
for i in $(seq 1 "$secrets_n"); do echo "robot-g$i:$secret"; done | cold_config "$tmp/secrets-g.curl"
read -r sg_s sg_ok sg_cpu < <(secrets_run "$tmp/secrets-g.curl" "$secrets_n")
# As many requests of one robot already verified: the warm time for the same count.
for _ in $(seq 1 "$secrets_n"); do echo "robot-g1:$secret"; done | cold_config "$tmp/secrets-w.curl"
read -r sw_s sw_ok sw_cpu < <(secrets_run "$tmp/secrets-w.curl" "$secrets_n")
# Stopped here: its minute's writes of last use must not fall into the later rows.
kill "$secrets_pid" 2>/dev/null || true
wait "$secrets_pid" 2>/dev/null || true
[ "$sb_ok" = "$secrets_bcrypt_n" ] && [ "$sg_ok" = "$secrets_n" ] && [ "$sw_ok" = "$secrets_n" ] ||
  { echo "bench: secrets rows: $sb_ok/$secrets_bcrypt_n bcrypt, $sg_ok/$secrets_n generated, $sw_ok/$secrets_n warm got a token" >&2; exit 1; }
echo "store robots, cold logins ($cold_conns connections), issuer CPU per login; generated secrets (HMAC under a pepper) against bcrypt cost 10"
printf '  %-44s %s ms CPU/login   (%s logins in %s s)\n' "bcrypt passwords" "$sb_cpu" "$secrets_bcrypt_n" "$sb_s"
printf '  %-44s %s ms CPU/login   (%s logins in %s s)\n' "generated secrets" "$sg_cpu" "$secrets_n" "$sg_s"
printf '  %-44s %s   (target <= 0.05)\n' "  ratio to bcrypt" "$(awk -v a="$sg_cpu" -v b="$sb_cpu" 'BEGIN {printf "%.4f", a/b}')"
printf '  %-44s %s s   (%s ms CPU/request)\n' "  as many warm requests, one robot" "$sw_s" "$sw_cpu"
printf '  %-44s %s   (target <= 2)\n' "  roll-out wall time / warm wall time" "$(ratio "$sg_s" "$sw_s")"
fig secrets.bcrypt.cpu_ms "$sb_cpu"
fig secrets.generated.cpu_ms "$sg_cpu"
fig secrets.generated.ratio_to_bcrypt "$(awk -v a="$sg_cpu" -v b="$sb_cpu" 'BEGIN {printf "%.4f", a/b}')"
fig secrets.generated.rollout_seconds "$sg_s"
fig secrets.warm.seconds "$sw_s"
fig secrets.rollout_to_warm "$(ratio "$sg_s" "$sw_s")"
