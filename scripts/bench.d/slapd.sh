# Sourced by scripts/bench. A real OpenLDAP directory (Debian's slapd) for the LDAP rows, as
# tests/common/slapd.rs runs it: unprivileged config, mdb in $tmp, a loopback port. It holds
# ldap1..ldap$users (password pw-<i>, the warm row) and ldapc1..ldapc$ldap_cold_n (pw-c<i>, the
# cold row), all members of the group "bench".
ldap_cold_n=${BENCH_LDAP_COLD_N:-500}
ldap_base="dc=bench,dc=test"
ldap_dir="$tmp/slapd"
mkdir -p "$ldap_dir/db"
cat > "$ldap_dir/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $ldap_dir/slapd.pid
argsfile $ldap_dir/slapd.args
database mdb
maxsize 268435456
suffix "$ldap_base"
rootdn "cn=admin,$ldap_base"
rootpw admin-pw
directory $ldap_dir/db
index uid eq
index member eq
index objectClass eq
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
CONF
{
  printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: bench\no: bench\n\n' "$ldap_base"
  for ou in people groups services; do printf 'dn: ou=%s,%s\nobjectClass: organizationalUnit\nou: %s\n\n' "$ou" "$ldap_base" "$ou"; done
  printf 'dn: cn=issuer,ou=services,%s\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: issuer\nsn: issuer\nuserPassword: svc-pw\n\n' "$ldap_base"
  ldap_person() { printf 'dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nuserPassword: %s\n\n' "$1" "$ldap_base" "$1" "$1" "$1" "$2"; }
  for i in $(seq 1 $users); do ldap_person "ldap$i" "pw-$i"; done
  for i in $(seq 1 "$ldap_cold_n"); do ldap_person "ldapc$i" "pw-c$i"; done
  printf 'dn: cn=bench,ou=groups,%s\nobjectClass: groupOfNames\ncn: bench\n' "$ldap_base"
  for i in $(seq 1 $users); do printf 'member: uid=ldap%s,ou=people,%s\n' "$i" "$ldap_base"; done
  for i in $(seq 1 "$ldap_cold_n"); do printf 'member: uid=ldapc%s,ou=people,%s\n' "$i" "$ldap_base"; done
} > "$ldap_dir/data.ldif"
/usr/sbin/slapadd -q -f "$ldap_dir/slapd.conf" -l "$ldap_dir/data.ldif"
ldap_port=$(free_port)
ldap_url="ldap://127.0.0.1:$ldap_port"
/usr/sbin/slapd -d 0 -f "$ldap_dir/slapd.conf" -h "$ldap_url/" 2>"$ldap_dir/slapd.log" & pids+=($!)
for _ in $(seq 1 400); do
  ldapwhoami -x -H "$ldap_url" -D "cn=issuer,ou=services,$ldap_base" -w svc-pw >/dev/null 2>&1 && break
  sleep 0.05
done
ldapwhoami -x -H "$ldap_url" -D "cn=issuer,ou=services,$ldap_base" -w svc-pw >/dev/null || { echo "bench: slapd never came up" >&2; exit 1; }
printf 'svc-pw\n' > "$tmp/ldap-bind-password"
# The issuer's [ldap] section (the main issuer and the cold one).
ldap_section() {
  cat <<TOML
[ldap]
url = "$ldap_url"
bind_dn = "cn=issuer,ou=services,$ldap_base"
bind_password_file = "ldap-bind-password"
user_base = "ou=people,$ldap_base"
user_filter = "(&(objectClass=inetOrgPerson)(uid={username}))"
group_base = "ou=groups,$ldap_base"
group_filter = "(&(objectClass=groupOfNames)(member={dn}))"
TOML
}
