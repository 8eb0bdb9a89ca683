// Checks a safeconduct access token's status through third-party libraries:
// @sd-jwt/jwt-status-list reads the status reference and decodes the list, jose
// verifies the Status List Token against the STS's JWKS.
//
//   node check.mjs <sts base url> <access token>
//
// Prints one JSON line {"idx":N,"uri":"...","status":S,"kid":"..."}; exits 1 on
// any failure. The STS's CA comes from NODE_EXTRA_CA_CERTS.
import { getStatusListFromJWT, getListFromStatusListJWT } from '@sd-jwt/jwt-status-list';
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';

const [base, accessToken] = process.argv.slice(2);
if (!base || !accessToken) {
  console.error('usage: node check.mjs <sts base url> <access token>');
  process.exit(2);
}

async function main() {
  const ref = getStatusListFromJWT(accessToken);
  const jwksResp = await fetch(new URL('/jwks', base));
  if (!jwksResp.ok) throw new Error(`jwks: HTTP ${jwksResp.status}`);
  const jwks = createLocalJWKSet(await jwksResp.json());

  const resp = await fetch(ref.uri, { headers: { Accept: 'application/statuslist+jwt' } });
  if (resp.status !== 200) throw new Error(`status list: HTTP ${resp.status}`);
  const ctype = resp.headers.get('content-type');
  if (ctype !== 'application/statuslist+jwt') throw new Error(`status list: Content-Type ${ctype}`);
  const slt = (await resp.text()).trim();

  const { payload, protectedHeader } = await jwtVerify(slt, jwks, { typ: 'statuslist+jwt' });
  if (protectedHeader.typ !== 'statuslist+jwt') throw new Error(`typ ${protectedHeader.typ}`);
  if (payload.sub !== ref.uri) throw new Error(`sub ${payload.sub} is not the uri ${ref.uri}`);
  if (!(payload.ttl > 0)) throw new Error(`ttl ${payload.ttl}`);

  const list = getListFromStatusListJWT(slt);
  const status = list.getStatus(ref.idx); // throws for an index outside the list
  console.log(JSON.stringify({ idx: ref.idx, uri: ref.uri, status, kid: decodeProtectedHeader(slt).kid }));
}

main().catch((err) => {
  console.error(`interop check failed: ${err.message}`);
  process.exit(1);
});
