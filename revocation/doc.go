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
//	key      = "sub" / "upstream" / "iss" / "trust_domain" / "aud" / "client_id" / "jti" / "bnd" / "attr." name
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
// # Indexing
//
// Each entry is filed under one anchor (Selector.Anchor) and a check reads only
// the anchors of the facts (Facts.Anchors), so the cost of a check does not grow
// with the number of entries. Index is the in-memory form of that index.
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
//	if e, err := store.Revoked(ctx, &f); err != nil || e != nil {
//		// refuse
//	}
package revocation
