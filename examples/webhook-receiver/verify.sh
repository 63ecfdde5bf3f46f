#!/bin/sh
# verify.sh JWKS_URL WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE
#
# Verifies one claimcheck webhook (Standard Webhooks, v1a) with openssl
# against the keys of kind "webhook" in the api's JWKS: prints "verified"
# and exits 0, or says why not and exits 1. Needs curl, jq, xxd, openssl 3.
set -eu
jwks=$1 id=$2 ts=$3 sigs=$4 body=$5
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

now=$(date +%s)
skew=$((now - ts))
if [ "${skew#-}" -gt 300 ]; then echo "webhook-timestamp is ${skew}s away" >&2; exit 1; fi

# What was signed: "<id>.<timestamp>.<body>", the body byte for byte.
printf '%s.%s.' "$id" "$ts" > "$tmp/msg"
cat "$body" >> "$tmp/msg"

curl -fsS "$jwks" | jq -r '.keys[] | select(.kind == "webhook") | .x' > "$tmp/keys"
for s in $sigs; do
  case $s in v1a,*) ;; *) continue ;; esac
  printf '%s' "${s#v1a,}" | base64 -d > "$tmp/sig"
  while read -r x; do
    # An Ed25519 public key as DER: a fixed 12-byte SPKI prefix, then the
    # 32 raw bytes (the JWK's x, base64url without padding).
    { printf '302a300506032b6570032100' | xxd -r -p
      printf '%s=' "$x" | tr '_-' '/+' | base64 -d; } > "$tmp/pub.der"
    if openssl pkeyutl -verify -pubin -inkey "$tmp/pub.der" -keyform DER -rawin \
        -in "$tmp/msg" -sigfile "$tmp/sig" > /dev/null 2>&1; then
      echo verified
      exit 0
    fi
  done < "$tmp/keys"
done
echo "no v1a signature verifies with a webhook key" >&2
exit 1
