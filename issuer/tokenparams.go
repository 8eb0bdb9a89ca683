package issuer

import (
	"mime"
	"net/http"
)

// tokenParams are the parameters of an introspection (RFC 7662 §2.1) or
// revocation (RFC 7009 §2.1) request: the token, its type hint, and the
// client's authentication (RFC 7521 §4.2 client assertion).
type tokenParams struct {
	Token         string
	TokenTypeHint string
	ClientID      string
	// ClientSecret is true when a client_secret was sent (not supported).
	ClientSecret bool
	// ClientAssertionType and ClientAssertion: private_key_jwt (RFC 7523 §2.2).
	ClientAssertionType string
	ClientAssertion     string
}

// tokenParamNames may each appear at most once.
var tokenParamNames = []string{"token", "token_type_hint", "client_id", "client_secret", "client_assertion_type", "client_assertion"}

// maxPresentedToken bounds the token parameter (verifyOwn refuses longer ones).
const maxPresentedToken = 16 << 10

// isForm reports whether r's body is application/x-www-form-urlencoded.
func isForm(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// parseTokenParams parses the form body of an introspection or revocation
// request. It checks the form, that no parameter is repeated, the client_id and
// the pairing of the client assertion; a missing token is the caller's to
// refuse (after client authentication).
func parseTokenParams(body string) (*tokenParams, *oauthError) {
	form, err := parseFormStrict(body)
	if err != nil {
		return nil, badRequest(codeInvalidRequest, "the request body is not a valid form")
	}
	for _, name := range tokenParamNames {
		if len(form[name]) > 1 {
			return nil, badRequest(codeInvalidRequest, "parameter "+name+" is repeated")
		}
	}
	p := &tokenParams{
		Token:               form.Get("token"),
		TokenTypeHint:       form.Get("token_type_hint"),
		ClientID:            form.Get("client_id"),
		ClientSecret:        form.Has("client_secret"),
		ClientAssertionType: form.Get("client_assertion_type"),
		ClientAssertion:     form.Get("client_assertion"),
	}
	switch {
	case len(p.Token) > maxPresentedToken:
		return nil, badRequest(codeInvalidRequest, "token is too long")
	case len(p.TokenTypeHint) > 256 || !printable(p.TokenTypeHint):
		return nil, badRequest(codeInvalidRequest, "token_type_hint is malformed")
	case len(p.ClientID) > maxClientID || !printable(p.ClientID):
		return nil, badRequest(codeInvalidRequest, "client_id is malformed")
	case (p.ClientAssertionType == "") != (p.ClientAssertion == ""):
		return nil, badRequest(codeInvalidRequest, "client_assertion and client_assertion_type must be sent together")
	}
	return p, nil
}
