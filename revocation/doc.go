// Package revocation owns the vocabulary of revocation: selectors, the facts of a
// token or workload they match, revoke and block entries, the feed of changes and
// the Store interface. It has no backend dependencies, so token verifiers (package
// verify) import it; the stores live in revocation/boltstore (embedded, one
// replica) and revocation/redisstore (Redis standalone, Sentinel or Cluster), and
// revocation/revocationtest holds the conformance suite both pass.
//
// # Selectors
//
// A selector names tokens and workloads by their facts:
//
//	selector = term *( "," term )
//	term     = key "=" value
//	key      = "sub" / "upstream" / "iss" / "trust_domain" / "aud" / "client_id" / "jti" / "bnd" / "kid" / "attr." name
//	name     = 1*64( a-z / 0-9 / "_" )
//	value    = 1*( any char but "," and control chars ) / DQUOTE *( any char but DQUOTE and "\" / "\" DQUOTE / "\\" ) DQUOTE
//
// Terms are ANDed and a key appears at most once (at most 16 terms, 4096 bytes). A
// value holding '*' is a glob ('*' matches any run of characters, '/' and ':'
// included; there is no escape); any other value matches exactly. A value starting
// with '"' is quoted. Values are 1 to 1024 bytes of UTF-8 without control
// characters, quoted or not. No whitespace is trimmed: "sub=a, aud=b" has a term
// with key " aud".
//
// "kid" is the key ID in the JWS header of an issued token (Facts.KeyID, set by
// whoever verified the signature: it is not a claim). Its value is exact only: a kid
// value holding '*' is refused, not taken for a glob. It applies to issued tokens
// only, so a block with a kid term is refused (ErrInvalid; see
// Selector.CheckKind), and a revoke with one ignores iat (see Entries).
//
// "aud" matches if any audience of the token does; "attr.NAME" matches the
// attribute NAME; a term on a fact the token lacks never matches. "iss" is accepted
// by ParseSelector but never matches: the STS resolves it to an upstream
// (Selector.WithUpstream) before storing, and stores refuse it.
//
// A selector must constrain something: it needs an exact term, or a "sub" glob
// whose literal prefix reaches a '/' or ':' ("sub=spiffe://corp/ns/*"). "sub=*"
// alone, or "client_id=ci-*" alone, is refused: "revoke everything" is not a
// selector. The canonical form (Selector.String) sorts terms by key and quotes a
// value only when it holds ',' or starts with '"'.
//
// # Entries
//
// A revoke entry invalidates every matching token whose iat, in whole seconds, is
// not after the entry's Created: a token minted in the same second as the revoke is
// revoked too. A block entry refuses new tokens to matching workloads while active.
// Entries are inactive once lifted or expired.
//
// A revoke whose selector has a kid term is the exception: it invalidates every
// matching token WHATEVER ITS iat, including tokens issued after the entry's
// Created. Revoking by kid is for a signing key that has been rotated out (it signs
// nothing new, so no legitimate token issued later carries its kid) or stolen
// (whoever holds it can put any iat in a token it forges). Never revoke the kid of a
// key that still signs: every token it issues while the entry lasts is invalid at
// once. The STS refuses to (POST /admin/v1/keys/revoke answers 409 until the key
// is rotated out).
//
// # Indexing
//
// Each entry is filed under one anchor (Selector.Anchor) and a check reads only
// the anchors of the facts (Facts.Anchors), so the cost of a check does not grow
// with the number of entries: a kid term anchors like jti, so a revoke by kid is
// one more bucket per check whatever the number of tokens its key signed. Index is
// the in-memory form of that index.
//
// # Usage
//
//	// At each exchange, before minting:
//	adm, err := store.Admit(ctx, &facts, instance)
//	switch {
//	case errors.Is(err, revocation.ErrBlocked):
//		// refuse; errors.As(*BlockedError) gives the entry for the audit log
//	case err != nil:
//		// store unavailable: fail closed (503)
//	}
//	facts.Binding = revocation.Fingerprint(attrs, bindingNames)
//	if facts.Binding != "" && facts.Binding != adm.Binding {
//		// records it; if another was recorded, revokes the old binding's tokens
//		fired, err := store.Bind(ctx, instance, &facts, 2*maxTTL)
//		...
//	}
//	// mint with iat = adm.IssuedAt and bnd = fp
//
//	// When verifying a token:
//	f := revocation.FactsFromClaims(claims)
//	f.KeyID = kid // of the key that verified the signature
//	if e, err := store.Revoked(ctx, &f); err != nil || e != nil {
//		// refuse
//	}
package revocation
