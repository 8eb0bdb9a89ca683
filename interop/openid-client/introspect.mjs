// RFC 7662 / RFC 7009 interop check with openid-client (not written here):
// discovery of the STS, then tokenIntrospection of each token and
// tokenRevocation of one, all with private_key_jwt client authentication.
// Driven by cmd/sts/interop_e2e_test.go, which passes (environment):
//   STS_ISSUER     the STS issuer URL (its CA in NODE_EXTRA_CA_CERTS)
//   CLIENT_ID      the registered client (a resource server)
//   CLIENT_JWK     path of the client's private JWK (ES256, with kid)
//   TOKENS         path of a JSON object {name: token} to introspect
//   REVOKE         the name of the token to revoke, then introspect again
//   REFUSE         the name of a token whose revocation must be refused
// It prints one JSON object: {introspection: {name: response}, revoked: {...},
// refusedRevocation: {name: error code}, metadata: {...}}.
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const jwk = JSON.parse(readFileSync(env('CLIENT_JWK'), 'utf8'));
const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
const config = await client.discovery(new URL(env('STS_ISSUER')), env('CLIENT_ID'), {}, client.PrivateKeyJwt({ key, kid: jwk.kid }));

const tokens = JSON.parse(readFileSync(env('TOKENS'), 'utf8'));
const out = { introspection: {}, revoked: {}, refusedRevocation: {}, metadata: {} };
const meta = config.serverMetadata();
for (const name of ['introspection_endpoint', 'revocation_endpoint', 'introspection_endpoint_auth_methods_supported', 'revocation_endpoint_auth_methods_supported']) {
  out.metadata[name] = meta[name];
}
for (const [name, token] of Object.entries(tokens)) {
  out.introspection[name] = await client.tokenIntrospection(config, token);
}
const revoke = env('REVOKE');
await client.tokenRevocation(config, tokens[revoke], { token_type_hint: 'access_token' });
out.revoked[revoke] = await client.tokenIntrospection(config, tokens[revoke]);
const refuse = env('REFUSE');
try {
  await client.tokenRevocation(config, tokens[refuse]);
  out.refusedRevocation[refuse] = 'accepted';
} catch (err) {
  if (!(err instanceof client.ResponseBodyError)) throw err;
  out.refusedRevocation[refuse] = err.error;
}
process.stdout.write(JSON.stringify(out) + '\n');
