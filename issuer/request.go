package issuer

import (
	"net/url"
	"slices"
	"strings"

	"github.com/safeconduct/safeconduct/attest"
)

// RFC 8693 identifiers.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TypeAccessToken        = attest.TypeAccessToken
	TypeJWT                = attest.TypeJWT
	TypeIDToken            = attest.TypeIDToken
)

// Request limits: generous for real clients, small for attackers.
const (
	maxBodyBytes    = 64 << 10
	maxTargets      = 16
	maxTargetLength = 1024
	maxScopes       = 32
	maxScopeLength  = 256
	maxClientID     = 256
)

// tokenRequest is an RFC 8693 §2.1 request, parsed once.
type tokenRequest struct {
	GrantType          string
	SubjectToken       string
	SubjectTokenType   string
	ActorToken         string
	ActorTokenType     string
	Audiences          []string
	Resources          []string
	Scopes             []string // split, deduplicated, in request order
	RequestedTokenType string   // defaulted to access_token
	ClientID           string   // as sent by a public client; unauthenticated
	ClientSecret       bool     // a client_secret was sent
	// ClientAssertionType and ClientAssertion are RFC 7521 §4.2 client
	// authentication (private_key_jwt, RFC 7523 §2.2); empty when absent.
	ClientAssertionType string
	ClientAssertion     string
}

// singleValued parameters may appear at most once (RFC 6749 §3.2).
var singleValued = []string{
	"grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type",
	"requested_token_type", "scope", "client_id", "client_secret",
	"client_assertion_type", "client_assertion",
}

// subjectTokenTypes are the token types accepted for subject and actor tokens.
var subjectTokenTypes = []string{TypeJWT, TypeIDToken, TypeAccessToken, TypeX509SVID}

// parseTokenRequest parses an application/x-www-form-urlencoded body. Every
// parameter is read and checked here, once; the handler never looks at the form.
func parseTokenRequest(body string) (*tokenRequest, *oauthError) {
	form, err := parseFormStrict(body)
	if err != nil {
		return nil, badRequest(codeInvalidRequest, "the request body is not a valid form")
	}
	for _, name := range singleValued {
		if len(form[name]) > 1 {
			return nil, badRequest(codeInvalidRequest, "parameter "+name+" is repeated")
		}
	}
	req := &tokenRequest{
		GrantType:           form.Get("grant_type"),
		SubjectToken:        form.Get("subject_token"),
		SubjectTokenType:    form.Get("subject_token_type"),
		ActorToken:          form.Get("actor_token"),
		ActorTokenType:      form.Get("actor_token_type"),
		RequestedTokenType:  form.Get("requested_token_type"),
		ClientID:            form.Get("client_id"),
		ClientSecret:        form.Has("client_secret"),
		ClientAssertionType: form.Get("client_assertion_type"),
		ClientAssertion:     form.Get("client_assertion"),
	}
	if e := req.checkTypes(); e != nil {
		return nil, e
	}
	if len(req.ClientID) > maxClientID || !printable(req.ClientID) {
		return nil, badRequest(codeInvalidRequest, "client_id is malformed")
	}
	if (req.ClientAssertionType == "") != (req.ClientAssertion == "") {
		return nil, badRequest(codeInvalidRequest, "client_assertion and client_assertion_type must be sent together")
	}
	req.Audiences = form["audience"]
	req.Resources = form["resource"]
	if e := checkTargets(req.Audiences, req.Resources); e != nil {
		return nil, e
	}
	if s, ok := form["scope"]; ok {
		scopes, e := parseScope(s[0])
		if e != nil {
			return nil, e
		}
		req.Scopes = scopes
	}
	return req, nil
}

// checkTypes checks the grant type, the tokens and their types, and defaults
// the requested token type.
func (req *tokenRequest) checkTypes() *oauthError {
	switch req.GrantType {
	case "":
		return badRequest(codeInvalidRequest, "grant_type is required")
	case GrantTypeTokenExchange:
	default:
		return badRequest(codeUnsupportedGrantType, "grant_type must be "+GrantTypeTokenExchange)
	}
	if req.SubjectToken == "" {
		return badRequest(codeInvalidRequest, "subject_token is required")
	}
	if req.SubjectTokenType == "" {
		return badRequest(codeInvalidRequest, "subject_token_type is required")
	}
	if !slices.Contains(subjectTokenTypes, req.SubjectTokenType) {
		return badRequest(codeInvalidRequest, "subject_token_type is not supported")
	}
	if (req.ActorToken == "") != (req.ActorTokenType == "") {
		return badRequest(codeInvalidRequest, "actor_token and actor_token_type must be sent together")
	}
	if req.ActorTokenType != "" && !slices.Contains(subjectTokenTypes, req.ActorTokenType) {
		return badRequest(codeInvalidRequest, "actor_token_type is not supported")
	}
	switch req.RequestedTokenType {
	case "":
		req.RequestedTokenType = TypeAccessToken
	case TypeAccessToken, TypeJWT:
	default:
		return badRequest(codeInvalidRequest, "requested_token_type is not supported")
	}
	return nil
}

// checkTargets checks the audience and resource values (RFC 8693 §2.1, RFC 8707).
func checkTargets(audiences, resources []string) *oauthError {
	if len(audiences)+len(resources) > maxTargets {
		return badRequest(codeInvalidTarget, "too many audience and resource values")
	}
	for _, a := range audiences {
		if a == "" || len(a) > maxTargetLength || !printable(a) {
			return badRequest(codeInvalidTarget, "an audience value is malformed")
		}
	}
	for _, r := range resources {
		if !validResource(r) {
			return badRequest(codeInvalidTarget, "a resource must be an absolute URI without a fragment")
		}
	}
	return nil
}

// parseScope splits a space-delimited scope (RFC 6749 §3.3) into distinct tokens.
func parseScope(s string) ([]string, *oauthError) {
	fields := strings.Split(s, " ")
	scopes := make([]string, 0, len(fields))
	for _, f := range fields {
		if f == "" {
			continue
		}
		if len(f) > maxScopeLength || !scopeToken(f) {
			return nil, badRequest(codeInvalidScope, "scope is malformed")
		}
		if !slices.Contains(scopes, f) {
			scopes = append(scopes, f)
		}
	}
	if len(scopes) > maxScopes {
		return nil, badRequest(codeInvalidScope, "too many scopes")
	}
	return scopes, nil
}

// scopeToken reports whether s is 1*NQCHAR (%x21 / %x23-5B / %x5D-7E).
func scopeToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
			return false
		}
	}
	return true
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// validResource: RFC 8707 §2, an absolute URI without a fragment.
func validResource(r string) bool {
	if r == "" || len(r) > maxTargetLength || !printable(r) || strings.ContainsAny(r, " #") {
		return false
	}
	u, err := url.Parse(r)
	return err == nil && u.IsAbs()
}

// parseFormStrict parses an application/x-www-form-urlencoded body, refusing bad
// escapes and ';' separators.
func parseFormStrict(body string) (url.Values, error) {
	return url.ParseQuery(body)
}
