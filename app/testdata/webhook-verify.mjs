// An independent Standard Webhooks v1a verifier, with node's own crypto
// only: the Go tests feed it every request their receiver gets.
//
//   node webhook-verify.mjs <JWKS URL>
//
// It fetches the JWKS once, keeps the keys of kind "webhook", prints
// "ready", then reads one JSON object per line on stdin,
// {"id": webhook-id, "timestamp": webhook-timestamp, "signature":
// webhook-signature, "body": base64 of the body}, and answers each with a
// line: "ok <kid>" or "bad <reason>".
import crypto from 'node:crypto';
import readline from 'node:readline';

const TOLERANCE_S = 5 * 60; // the libraries' default tolerance

const res = await fetch(process.argv[2]);
if (!res.ok) {
  console.log(`bad jwks status ${res.status}`);
  process.exit(1);
}
const jwks = await res.json();
const keys = jwks.keys
  .filter((k) => k.kind === 'webhook' && k.kty === 'OKP' && k.crv === 'Ed25519')
  .map((k) => ({ kid: k.kid, key: crypto.createPublicKey({ key: { kty: k.kty, crv: k.crv, x: k.x }, format: 'jwk' }) }));
if (keys.length === 0) {
  console.log('bad no webhook key in the JWKS');
  process.exit(1);
}
console.log('ready');

function check(m) {
  if (typeof m.id !== 'string' || m.id === '' || m.id.includes('.')) return 'bad webhook-id missing or has a dot';
  if (!/^[0-9]+$/.test(m.timestamp ?? '')) return 'bad webhook-timestamp is not integer seconds';
  const skew = Math.abs(Math.floor(Date.now() / 1000) - Number(m.timestamp));
  if (skew > TOLERANCE_S) return `bad webhook-timestamp ${skew}s away`;
  const body = Buffer.from(m.body, 'base64');
  const signed = Buffer.concat([Buffer.from(`${m.id}.${m.timestamp}.`, 'utf8'), body]);
  // A space-separated list of "<version>,<base64>"; only v1a is ours.
  for (const entry of (m.signature ?? '').split(' ')) {
    const [version, b64] = entry.split(',', 2);
    if (version !== 'v1a' || !b64) continue;
    const sig = Buffer.from(b64, 'base64');
    if (sig.length !== 64 || sig.toString('base64') !== b64) continue;
    for (const k of keys) {
      if (crypto.verify(null, signed, k.key, sig)) return `ok ${k.kid}`;
    }
  }
  return 'bad no v1a signature verifies with a webhook key';
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  let out;
  try {
    out = check(JSON.parse(line));
  } catch (e) {
    out = `bad ${String(e).replaceAll('\n', ' ')}`;
  }
  console.log(out);
}
