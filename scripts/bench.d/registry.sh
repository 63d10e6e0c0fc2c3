# Sourced by scripts/bench: the registry rows.
# ---- registry: the same image pushed and pulled through ours and through distribution 2.8
dist_port=$(free_port)
cat > "$tmp/dist.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $tmp/dist}}
http: {addr: 127.0.0.1:$dist_port}
auth: {token: {realm: "http://127.0.0.1:$port/v1/registry", service: bench, issuer: bench.test, rootcertbundle: $tmp/bench.test.crt}}
YML
docker-registry serve "$tmp/dist.yml" >"$tmp/dist.log" 2>&1 & pids+=($!)
for _ in $(seq 1 400); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$dist_port/v2/")" = 401 ] && break; sleep 0.05; done

# A one-layer OCI layout; the layer is real gzip so skopeo sends it as is.
python3 - "$tmp/image" "$layer_mb" <<'PY'
import gzip, hashlib, json, os, sys, tarfile, io
root, mb = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{root}/blobs/sha256")
def put(b):
    h = hashlib.sha256(b).hexdigest()
    open(f"{root}/blobs/sha256/{h}", "wb").write(b)
    return {"digest": "sha256:" + h, "size": len(b)}
payload = os.urandom(mb << 20)
tar = io.BytesIO()
with tarfile.open(fileobj=tar, mode="w") as t:
    info = tarfile.TarInfo("payload.bin"); info.size = len(payload); t.addfile(info, io.BytesIO(payload))
raw = tar.getvalue()
layer = put(gzip.compress(raw, compresslevel=1))
config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode())
manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}]}).encode())
open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    **manifest, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(f"{root}/index.json", "w"))
PY
export REGISTRY_AUTH_FILE="$tmp/skopeo-auth.json"
sk() { skopeo --insecure-policy "$@" >/dev/null 2>"$tmp/skopeo.err" || { cat "$tmp/skopeo.err" >&2; echo "bench: skopeo $1 failed" >&2; exit 1; }; }
timed() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b-a}'; }
push_to() { sk copy --dest-tls-verify=false --dest-creds pusher:pusher-pw "oci:$tmp/image:latest" "docker://127.0.0.1:$1/bench/app:latest"; }
pull_from() { sk copy --src-tls-verify=false --src-creds pusher:pusher-pw "docker://127.0.0.1:$1/bench/app:latest" "oci:$tmp/pulled-$1:latest"; }
dist_push=$(timed push_to "$dist_port")
ours_push=$(timed push_to "$reg_port")
dist_pull=$(timed pull_from "$dist_port")
ours_pull=$(timed pull_from "$reg_port")
cmp -s "$tmp/pulled-$reg_port/blobs/sha256/$(ls "$tmp/image/blobs/sha256" | head -1)" "$tmp/image/blobs/sha256/$(ls "$tmp/image/blobs/sha256" | head -1)" || { echo "bench: pulled bytes differ" >&2; exit 1; }
rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$issuer_pid/status")

echo "registry, one ${layer_mb} MiB layer with skopeo (seconds; ratio = distribution / ours, >= 1 means ours is at least as fast)"
printf '  %-12s %10s %10s %8s\n' "" "ours" "dist 2.8" "ratio"
printf '  %-12s %10s %10s %8s\n' "push" "$ours_push" "$dist_push" "$(ratio "$dist_push" "$ours_push")"
printf '  %-12s %10s %10s %8s\n' "pull" "$ours_pull" "$dist_pull" "$(ratio "$dist_pull" "$ours_pull")"
printf '  %-44s %s MiB   (issuer + registry process; target < 100 MiB)\n' "peak RSS (VmHWM) after push and pull" "$rss"

bearer() { # $1 = scope... -> a token for pusher
  local q="" s
  for s in "$@"; do q="$q&scope=$s"; done
  curl -fs -u pusher:pusher-pw "http://127.0.0.1:$port/v1/registry?service=bench$q" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
# $1 = port, $2 = repository, $3 = file, $4 = digest, $5 = token -> seconds of the PUT.
# POST, then PUT with the body: distribution 2.8 does not take a monolithic POST.
put_blob() {
  local loc sep out
  loc=$(curl -fsS -o /dev/null -D - -X POST -H "Authorization: Bearer $5" "http://127.0.0.1:$1/v2/$2/blobs/uploads/" \
    | awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')
  case $loc in http*) ;; *) loc="http://127.0.0.1:$1$loc" ;; esac
  case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
  out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -X PUT -H "Authorization: Bearer $5" \
    -H 'Content-Type: application/octet-stream' -T "$3" "$loc${sep}digest=$4")
  [ "${out%% *}" = 201 ] || { echo "bench: PUT of $2 to port $1 answered ${out%% *}" >&2; exit 1; }
  printf '%.2f\n' "${out#* }"
}
# ---- small blobs on one kept-alive connection: 1,000 GETs of a 1 KiB blob, as a client pulling
# many small layers or configs does. Nagle's algorithm would add ~40 ms to each without
# TCP_NODELAY (the body waits for the ACK of the header).
small_gets=1000
head -c 1024 /dev/urandom > "$tmp/small.bin"
small_digest="sha256:$(sha256sum "$tmp/small.bin" | cut -d' ' -f1)"
tok=$(bearer repository:bench/small:pull,push)
for p in "$reg_port" "$dist_port"; do
  put_blob "$p" bench/small "$tmp/small.bin" "$small_digest" "$tok" >/dev/null
  { echo "header = \"Authorization: Bearer $tok\""; for _ in $(seq 1 $small_gets); do echo "url = \"http://127.0.0.1:$p/v2/bench/small/blobs/$small_digest\""; echo 'output = "/dev/null"'; done; } > "$tmp/small-$p.curl"
done
small_get() { curl -fsS --config "$tmp/small-$1.curl" || { echo "bench: small GETs from port $1 failed" >&2; exit 1; }; }
ours_small=$(timed small_get "$reg_port")
dist_small=$(timed small_get "$dist_port")
echo "registry, ${small_gets} GETs of a 1 KiB blob on one connection with curl (seconds)"
printf '  %-12s %10s %10s %8s\n' "" "ours" "dist 2.8" "ratio"
printf '  %-12s %10s %10s %8s\n' "small GETs" "$ours_small" "$dist_small" "$(ratio "$dist_small" "$ours_small")"
fig registry.skopeo.push.ours_s "$ours_push"
fig registry.skopeo.push.dist_s "$dist_push"
fig registry.skopeo.pull.ours_s "$ours_pull"
fig registry.skopeo.pull.dist_s "$dist_pull"
fig registry.skopeo.peak_rss_mib "$rss"
fig registry.small_gets.ours_s "$ours_small"
fig registry.small_gets.dist_s "$dist_small"

# ---- raw: one large blob with curl, a monolithic PUT (POST for the location, then PUT with
# the whole body, streamed from the file) and a plain GET, so that the client is not what is
# measured (skopeo above spends most of its time compressing and hashing).
raw_mb=${BENCH_RAW_MB:-512}
head -c "$((raw_mb << 20))" /dev/urandom > "$tmp/raw.bin"
raw_digest="sha256:$(sha256sum "$tmp/raw.bin" | cut -d' ' -f1)"
get_blob() { # $1 = port, $2 = repository, $3 = digest, $4 = token -> seconds
  local out
  # Timed into /dev/null (a file or a pipe would measure the disk or the hashing); then the
  # bytes are checked by a second, untimed GET.
  out=$(curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}' -H "Authorization: Bearer $4" "http://127.0.0.1:$1/v2/$2/blobs/$3")
  [ "${out%% *}" = 200 ] || { echo "bench: GET of $2 from port $1 answered ${out%% *}" >&2; exit 1; }
  [ "${out##* }" = "$((raw_mb << 20))" ] || { echo "bench: GET of $2 from port $1 gave ${out##* } bytes" >&2; exit 1; }
  [ "sha256:$(curl -fs -H "Authorization: Bearer $4" "http://127.0.0.1:$1/v2/$2/blobs/$3" | sha256sum | cut -d' ' -f1)" = "$3" ] \
    || { echo "bench: the blob from port $1 differs" >&2; exit 1; }
  out=${out#* }
  printf '%.2f\n' "${out% *}"
}
tok=$(bearer repository:bench/raw:pull,push)
raw_dist_put=$(put_blob "$dist_port" bench/raw "$tmp/raw.bin" "$raw_digest" "$tok")
raw_ours_put=$(put_blob "$reg_port" bench/raw "$tmp/raw.bin" "$raw_digest" "$tok")
raw_dist_get=$(get_blob "$dist_port" bench/raw "$raw_digest" "$tok")
raw_ours_get=$(get_blob "$reg_port" bench/raw "$raw_digest" "$tok")
mbps() { awk -v mb="$raw_mb" -v s="$1" 'BEGIN {printf "%.0f", mb * 1.048576 / s}'; }

# ---- 16 pushes of a 256 MiB blob at once into ours: the process's peak RSS (VmHWM, reset
# first) says whether uploads stream to disk or gather in memory.
conc=16
head -c "$((256 << 20))" /dev/urandom > "$tmp/conc.bin"
conc_digest="sha256:$(sha256sum "$tmp/conc.bin" | cut -d' ' -f1)"
scopes=(); for i in $(seq 1 $conc); do scopes+=("repository:bench/c$i:pull,push"); done
tok=$(bearer "${scopes[@]}")
echo 5 > "/proc/$issuer_pid/clear_refs"
conc_t0=$(date +%s.%N)
conc_pids=()
for i in $(seq 1 $conc); do put_blob "$reg_port" "bench/c$i" "$tmp/conc.bin" "$conc_digest" "$tok" > "$tmp/conc-$i.out" & conc_pids+=($!); done
for p in "${conc_pids[@]}"; do wait "$p" || { echo "bench: a concurrent push failed" >&2; exit 1; }; done
conc_s=$(awk -v a="$conc_t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}')
conc_rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$issuer_pid/status")
rm -f "$tmp/conc.bin" "$tmp/raw.bin"

echo "registry raw, one ${raw_mb} MiB blob with curl (seconds, MB/s; ratio = distribution / ours)"
printf '  %-12s %16s %16s %8s\n' "" "ours" "dist 2.8" "ratio"
printf '  %-12s %8s %4s MB/s %8s %4s MB/s %8s\n' "PUT" "$raw_ours_put" "$(mbps "$raw_ours_put")" "$raw_dist_put" "$(mbps "$raw_dist_put")" "$(ratio "$raw_dist_put" "$raw_ours_put")"
printf '  %-12s %8s %4s MB/s %8s %4s MB/s %8s\n' "GET" "$raw_ours_get" "$(mbps "$raw_ours_get")" "$raw_dist_get" "$(mbps "$raw_dist_get")" "$(ratio "$raw_dist_get" "$raw_ours_get")"
printf '  %-44s %s MiB   (%s s for all; target < 100 MiB)\n' "peak RSS, $conc concurrent 256 MiB PUTs" "$conc_rss" "$conc_s"
fig registry.raw.put.ours_s "$raw_ours_put"
fig registry.raw.put.dist_s "$raw_dist_put"
fig registry.raw.get.ours_s "$raw_ours_get"
fig registry.raw.get.dist_s "$raw_dist_get"
fig registry.raw.put.ratio "$(ratio "$raw_dist_put" "$raw_ours_put")"
fig registry.raw.get.ratio "$(ratio "$raw_dist_get" "$raw_ours_get")"
fig registry.concurrent_puts.peak_rss_mib "$conc_rss"
fig registry.concurrent_puts.seconds "$conc_s"
