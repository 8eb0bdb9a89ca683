"""Validate a safeconduct access token and check its Token Status List entry.

    python3 check.py https://sts.example https://ledger.internal <access token>

Needs PyJWT with its crypto extra (pip install "pyjwt[crypto]"). Set
SSL_CERT_FILE for an STS whose CA is not in the system store.
"""
import base64
import sys
import time
import urllib.request
import zlib

import jwt  # PyJWT

ALGS = ["ES256", "EdDSA", "RS256", "PS256"]
_lists = {}  # uri -> (expires_at, raw status bytes, bits): cache until ttl


def _fetch_list(iss, jwks, uri):
    cached = _lists.get(uri)
    if cached and cached[0] > time.time():
        return cached[1], cached[2]
    req = urllib.request.Request(uri, headers={"Accept": "application/statuslist+jwt"})
    with urllib.request.urlopen(req, timeout=5) as resp:  # fails closed: raises
        if resp.headers.get("Content-Type") != "application/statuslist+jwt":
            raise ValueError("not a Status List Token")
        slt = resp.read(4 << 20).decode()
    if jwt.get_unverified_header(slt).get("typ") != "statuslist+jwt":
        raise ValueError("Status List Token typ is not statuslist+jwt")
    claims = jwt.decode(slt, jwks.get_signing_key_from_jwt(slt).key, algorithms=ALGS,
                        options={"require": ["sub", "iat", "exp"], "verify_aud": False})
    if claims["sub"] != uri:
        raise ValueError("Status List Token sub is not the uri")
    sl = claims["status_list"]
    bits, lst = sl["bits"], sl["lst"]
    d = zlib.decompressobj()  # DEFLATE in the ZLIB format (RFC 1950)
    raw = d.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)), 4 << 20)
    ttl = min(float(claims.get("ttl", 30)), 600)
    _lists[uri] = (min(time.time() + ttl, claims["exp"]), raw, bits)
    return raw, bits


def check(iss, audience, token):
    jwks = jwt.PyJWKClient(iss + "/jwks")
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":
        raise ValueError("not an access token (typ)")
    claims = jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=ALGS,
                        audience=audience, issuer=iss)
    ref = claims["status"]["status_list"]
    uri, idx = ref["uri"], ref["idx"]
    if not uri.startswith(iss + "/statuslists/"):
        raise ValueError("status list outside the issuer: not fetched")
    raw, bits = _fetch_list(iss, jwks, uri)
    if not isinstance(idx, int) or idx < 0 or idx * bits // 8 >= len(raw):
        raise ValueError("index outside the list")  # an error, never VALID
    status = (raw[idx * bits // 8] >> (idx * bits % 8)) & ((1 << bits) - 1)
    if status != 0:
        raise PermissionError("token revoked (status %d)" % status)
    return claims


if __name__ == "__main__":
    c = check(sys.argv[1], sys.argv[2], sys.argv[3])
    print("valid:", c["sub"], c["status"]["status_list"])
