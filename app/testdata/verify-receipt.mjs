// Verifies a claimcheck result receipt with an independent JOSE library
// (jose 6), as any third party would: the api's JWKS document, its keys of
// kind "receipt" only, typ receipt+jwt, the workers' issuer, the receipts
// audience, EdDSA only.
//
// usage: node verify-receipt.mjs NODE_MODULES_DIR JWKS_FILE RECEIPT_FILE
// Prints the verified payload and protected header as JSON; exits 1 with
// the library's error code on any failure.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [modules, jwksFile, receiptFile] = process.argv.slice(2);
const jose = await import(pathToFileURL(createRequire(modules + '/').resolve('jose')).href);

const doc = JSON.parse(readFileSync(jwksFile, 'utf8'));
const receiptKeys = { keys: doc.keys.filter((k) => k.kind === 'receipt') };
const jwks = jose.createLocalJWKSet(receiptKeys);
const receipt = readFileSync(receiptFile, 'utf8').trim();
try {
  const { payload, protectedHeader } = await jose.jwtVerify(receipt, jwks, {
    typ: 'receipt+jwt',
    issuer: 'urn:claimcheck:workers',
    audience: 'urn:claimcheck:receipts',
    algorithms: ['EdDSA'],
    requiredClaims: ['exp', 'iat', 'jti', 'job', 'result'],
  });
  console.log(JSON.stringify({ payload, protectedHeader }));
} catch (err) {
  console.error(`refused: ${err.code ?? ''} ${err.message}`);
  process.exit(1);
}
