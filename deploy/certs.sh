#!/usr/bin/env bash
# Makes a private CA and node certificates with openssl, for the compose file and for a
# Kubernetes Secret when cert-manager is not used (deploy/cert-manager/ is the managed way).
#
# Usage: deploy/certs.sh DIR NAME [DNS-NAME-OR-IP ...]
#   DIR/ca.crt, DIR/ca.key        the CA (made once, reused by later calls with the same DIR)
#   DIR/NAME/tls.crt, tls.key     a node certificate for the names given, signed by the CA,
#   DIR/NAME/ca.crt               usable as server and as client (mutual TLS between nodes)
# The file names are the ones cert-manager writes into a Secret (tls.crt, tls.key, ca.crt), so
# the image's CAIRN_TLS_* defaults (/etc/cairn/tls/...) fit both.
# Example, compose: for n in 1 2 3; do deploy/certs.sh deploy/tls cairn-$n cairn-$n localhost 127.0.0.1; done
set -euo pipefail

DAYS=${CAIRN_CERT_DAYS:-365}
dir=${1:?usage: deploy/certs.sh DIR NAME [DNS-NAME-OR-IP ...]}
name=${2:?usage: deploy/certs.sh DIR NAME [DNS-NAME-OR-IP ...]}
shift 2
[ $# -gt 0 ] || set -- "$name"
command -v openssl >/dev/null || { echo "error: openssl is needed" >&2; exit 1; }

mkdir -p "$dir/$name"
if [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days "$DAYS" -subj "/CN=cairn CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
sans=()
for san in "$@"; do
    if [[ $san =~ ^[0-9.]+$ || $san == *:* ]]; then sans+=("IP:$san"); else sans+=("DNS:$san"); fi
done
san_list=$(IFS=,; echo "${sans[*]}")
ext=$(mktemp)
trap 'rm -f "$ext" "$dir/$name/tls.csr"' EXIT
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=$san_list" > "$ext"
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$dir/$name/tls.key" -out "$dir/$name/tls.csr" -subj "/CN=$name" 2>/dev/null
openssl x509 -req -in "$dir/$name/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -out "$dir/$name/tls.crt" -days "$DAYS" -extfile "$ext" 2>/dev/null
cp "$dir/ca.crt" "$dir/$name/ca.crt"
# The container runs as user 10001: the key must be readable by it when mounted from the host.
chmod 644 "$dir/$name/tls.key"
echo "$dir/$name: tls.crt tls.key ca.crt for ${san_list}"
