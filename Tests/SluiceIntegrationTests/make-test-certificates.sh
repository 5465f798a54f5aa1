#!/bin/bash
# Makes the test PKI in DIR with the openssl command (no private key is ever committed):
#   ca.pem/ca.key            test CA
#   server.pem/server.key    localhost and 127.0.0.1, signed by the CA
#   renewed.pem/renewed.key  the same names, another key: what a certificate renewal installs
#   expired.pem/expired.key  localhost and 127.0.0.1, signed by the CA, valid only in January 2020
#   wronghost.pem/.key       wrong.example, signed by the CA
#   selfsigned.pem/.key      localhost and 127.0.0.1, self-signed (not trusted by the CA)
#   other.key                a key that matches none of the certificates
set -euo pipefail
dir="${1:?usage: make-test-certificates.sh DIR}"
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
san() { printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' "$1" > "$2"; }

key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days 30 -subj /CN=sluice-test-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null

san "DNS:localhost,IP:127.0.0.1" local.ext
san "DNS:wrong.example" wrong.ext
signed() {  # signed NAME CN EXTFILE
    key "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 30 \
        -extfile "$3" 2>/dev/null
}
signed server localhost local.ext
signed renewed localhost local.ext
signed wronghost wrong.example wrong.ext

# Expired: `openssl ca` is the tool in OpenSSL 3.0 that takes explicit validity dates.
key expired.key
openssl req -new -key expired.key -out expired.csr -subj /CN=localhost 2>/dev/null
: > index.txt
echo 1000 > serial
cat > ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
[anything]
commonName = supplied
CNF
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem -notext \
    -startdate 20200101000000Z -enddate 20200131000000Z -extfile local.ext 2>/dev/null

key selfsigned.key
openssl req -x509 -new -key selfsigned.key -out selfsigned.pem -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
key other.key
