#!/usr/bin/env bash
# TEST-ONLY demo PKI for s2smux and the interop servers (Prosody, ejabberd).
#
#   certs/gen-certs.sh [--out DIR] [--days N] [options] DOMAIN...
#
# Writes into DIR (default: the directory of this script):
#   ca.pem, ca.key          demo CA (ECDSA P-256), created once and reused
#   DOMAIN.pem, DOMAIN.key  leaf certificate (leaf only, no chain: the CA is a
#                           trust anchor) and its ECDSA P-256 key (PKCS#8)
# The leaf carries dNSName DOMAIN and SRVName _xmpp-server.DOMAIN, and CN
# DOMAIN for readable logs. Never an XmppAddr: ejabberd 23.01 crashes on
# XmppAddr in S2S certificates.
#
# Idempotent: an existing leaf is kept when it still verifies against the CA,
# carries the right names, matches its key and is valid for 30 more days.
#
# Negative fixtures (need --out DIR, so the demo set is never overwritten;
# always regenerated):
#   --expired             validity ended yesterday
#   --not-yet-valid       validity starts in 30 days
#   --ca-name NAME        sign with a separate CA "NAME" (own files SLUG.pem /
#                         SLUG.key, SLUG = NAME lowercased, non-alnum -> '-'),
#                         created on first use; nobody trusts it
#   --name-on-cert OTHER  DOMAIN.pem/.key carry OTHER's names (wrong name)
# Other options:
#   --days N              leaf validity in days (default 3650)
#   --force               regenerate leaves even if they look fine
set -euo pipefail
export TZ=UTC LC_ALL=C

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here"
out_given=0
days=3650
validity=normal # normal | expired | not-yet-valid
ca_name=""
name_on_cert=""
force=0
domains=()

die() { echo "gen-certs.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
    case "$1" in
        --out) (($# >= 2)) || die "--out needs a directory"; out="$2"; out_given=1; shift 2 ;;
        --days) (($# >= 2)) || die "--days needs a number"; days="$2"; shift 2 ;;
        --expired) validity=expired; shift ;;
        --not-yet-valid) validity=not-yet-valid; shift ;;
        --ca-name) (($# >= 2)) || die "--ca-name needs a name"; ca_name="$2"; shift 2 ;;
        --name-on-cert) (($# >= 2)) || die "--name-on-cert needs a domain"; name_on_cert="$2"; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) usage 0 ;;
        --) shift; domains+=("$@"); break ;;
        -*) echo "gen-certs.sh: unknown option $1" >&2; usage 2 ;;
        *) domains+=("$1"); shift ;;
    esac
done

[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer"
command -v certtool >/dev/null || die "certtool not found (Debian: apt-get install gnutls-bin)"
for d in "${domains[@]}" ${name_on_cert:+"$name_on_cert"}; do
    [[ "$d" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ && "$d" != *..* ]] || die "not a domain name: $d"
done

negative=0
[[ "$validity" != normal || -n "$ca_name" || -n "$name_on_cert" ]] && negative=1
if ((negative && !out_given)); then
    die "negative fixtures (--expired, --not-yet-valid, --ca-name, --name-on-cert) need --out DIR"
fi
((negative)) && force=1

mkdir -p "$out"
out="$(cd "$out" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [[ -n "$ca_name" ]]; then
    ca_base="$(printf '%s' "$ca_name" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9' '-' | sed -e 's/--*/-/g' -e 's/^-//' -e 's/-$//')"
    [[ -n "$ca_base" && "$ca_base" != ca ]] || die "--ca-name must give a file name other than ca"
    ca_cn="$ca_name"
else
    ca_base=ca
    ca_cn="s2smux Demo CA (TEST ONLY)"
fi
ca_pem="$out/$ca_base.pem"
ca_key="$out/$ca_base.key"

gen_key() { # FILE: unencrypted PKCS#8 ECDSA P-256 (OpenSSL, Erlang and GnuTLS read it)
    # certtool 3.7 encodes the private scalar as a signed integer (33 bytes
    # with a leading zero, or fewer than 32); RFC 5915 wants exactly 32. Such
    # keys are 150 bytes of DER: retry until we get one.
    local i
    for ((i = 0; i < 64; i++)); do
        certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 --pkcs8 --password '' \
            --no-text --outfile "$1" </dev/null 2>/dev/null
        (($(grep -v -- '-----' "$1" | base64 -d | wc -c) == 150)) && break
    done
    chmod 0644 "$1" # test-only key; containers run Prosody/ejabberd as other users
}

key_matches() { # CERT KEY
    [[ "$(certtool --key-id --hash sha256 --infile "$1" 2>/dev/null)" == \
       "$(certtool --key-id --hash sha256 --load-privkey "$2" 2>/dev/null)" ]]
}

# DER IA5String as hex, for certtool's other_name (OID + hex DER value).
ia5_hex() {
    local v="$1" n=${#1} len
    if ((n < 128)); then printf -v len '%02x' "$n"
    elif ((n < 256)); then printf -v len '81%02x' "$n"
    else printf -v len '82%04x' "$n"; fi
    printf '16%s%s' "$len" "$(printf '%s' "$v" | od -An -tx1 | tr -d ' \n')"
}

ensure_ca() {
    if [[ -s "$ca_pem" && -s "$ca_key" ]] && key_matches "$ca_pem" "$ca_key"; then
        echo "CA:   $ca_pem (kept)"
        return
    fi
    [[ -e "$ca_pem" || -e "$ca_key" ]] && echo "CA:   $ca_pem missing, broken or not matching its key; regenerating" >&2
    local ca_days=$((days > 7300 ? days + 365 : 7300))
    gen_key "$ca_key"
    cat >"$tmp/ca.tmpl" <<EOF
cn = "$ca_cn"
ca
cert_signing_key
crl_signing_key
expiration_days = $ca_days
EOF
    certtool --generate-self-signed --load-privkey "$ca_key" --template "$tmp/ca.tmpl" \
        --outfile "$ca_pem" --no-text </dev/null 2>/dev/null
    echo "CA:   $ca_pem (new, $ca_days days)"
}

leaf_ok() { # PEM KEY NAME: still good enough to keep?
    local pem="$1" key="$2" name="$3" info
    [[ -s "$pem" && -s "$key" ]] || return 1
    key_matches "$pem" "$key" || return 1
    certtool --verify --load-ca-certificate "$ca_pem" --infile "$pem" >/dev/null 2>&1 || return 1
    info="$(certtool -i --infile "$pem" 2>/dev/null)" || return 1
    grep -qx "[[:space:]]*DNSname: $name" <<<"$info" || return 1
    grep -qx "[[:space:]]*SRVName: _xmpp-server.$name" <<<"$info" || return 1
    ! grep -q "XMPP Address" <<<"$info" || return 1
    # Valid for 30 more days? (certtool --verify checks "now" only.)
    local not_after
    not_after="$(sed -n 's/^[[:space:]]*Not After: //p' <<<"$info")"
    [[ -n "$not_after" ]] || return 1
    (($(date -d "$not_after" +%s) > $(date +%s) + 30 * 86400))
}

issue() { # DOMAIN
    local domain="$1" name="${name_on_cert:-$1}"
    local pem="$out/$domain.pem" key="$out/$domain.key"
    if ((!force)) && leaf_ok "$pem" "$key" "$name"; then
        echo "leaf: $pem (kept)"
        return
    fi
    local dates
    case "$validity" in
        normal) dates="expiration_days = $days" ;;
        expired) dates="activation_date = \"$(date -d '-365 days' '+%Y-%m-%d %H:%M:%S')\"
expiration_date = \"$(date -d '-1 day' '+%Y-%m-%d %H:%M:%S')\"" ;;
        not-yet-valid) dates="activation_date = \"$(date -d '+30 days' '+%Y-%m-%d %H:%M:%S')\"
expiration_date = \"$(date -d "+$((30 + days)) days" '+%Y-%m-%d %H:%M:%S')\"" ;;
    esac
    cat >"$tmp/leaf.tmpl" <<EOF
cn = "$name"
dns_name = "$name"
other_name = "1.3.6.1.5.5.7.8.7 $(ia5_hex "_xmpp-server.$name")"
tls_www_server
tls_www_client
signing_key
$dates
EOF
    gen_key "$key"
    certtool --generate-certificate --load-privkey "$key" --load-ca-certificate "$ca_pem" \
        --load-ca-privkey "$ca_key" --template "$tmp/leaf.tmpl" --outfile "$pem" --no-text </dev/null 2>/dev/null
    local note="$validity"
    [[ "$name" != "$domain" ]] && note+=", names of $name"
    [[ "$ca_base" != ca ]] && note+=", signed by $ca_cn"
    echo "leaf: $pem (new, $note)"
}

ensure_ca
for d in "${domains[@]}"; do issue "$d"; done
