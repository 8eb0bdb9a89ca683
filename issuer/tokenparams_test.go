package issuer

import (
	"net/url"
	"strings"
	"testing"
)

func TestParseTokenParams(t *testing.T) {
	ok := url.Values{"token": {"a.b.c"}, "token_type_hint": {"access_token"}, "client_id": {"ledger-api"},
		"client_assertion_type": {AssertionTypeJWTBearer}, "client_assertion": {"x.y.z"}, "unknown": {"ignored"}}
	p, e := parseTokenParams(ok.Encode())
	if e != nil || p.Token != "a.b.c" || p.TokenTypeHint != "access_token" || p.ClientID != "ledger-api" ||
		p.ClientAssertionType != AssertionTypeJWTBearer || p.ClientAssertion != "x.y.z" || p.ClientSecret {
		t.Fatalf("%+v %v", p, e)
	}
	for name, body := range map[string]string{
		"bad escape":              "token=%zz",
		"semicolon":               "token=a;b=c",
		"repeated token":          "token=a&token=b",
		"repeated hint":           "token=a&token_type_hint=x&token_type_hint=y",
		"repeated client_id":      "client_id=a&client_id=b",
		"repeated assertion":      "client_assertion=a&client_assertion=b&client_assertion_type=x",
		"assertion without type":  "token=a&client_assertion=x",
		"type without assertion":  "token=a&client_assertion_type=x",
		"control in client_id":    "token=a&client_id=%01",
		"control in hint":         "token=a&token_type_hint=%0a",
		"token too long":          "token=" + strings.Repeat("a", maxPresentedToken+1),
		"client_id too long":      "client_id=" + strings.Repeat("a", maxClientID+1),
		"repeated client_secret":  "client_secret=a&client_secret=b",
		"repeated assertion type": "client_assertion_type=a&client_assertion_type=b",
	} {
		t.Run(name, func(t *testing.T) {
			if p, e := parseTokenParams(body); e == nil || e.Status != 400 || e.Code != codeInvalidRequest {
				t.Fatalf("accepted %+v (%v)", p, e)
			}
		})
	}
	if p, e := parseTokenParams("token=a&client_secret="); e != nil || !p.ClientSecret {
		t.Fatalf("an empty client_secret is still a secret sent: %+v %v", p, e)
	}
}

// FuzzParseTokenParams: any body either parses into parameters whose
// invariants hold, or is refused with a 400 invalid_request; never a panic.
func FuzzParseTokenParams(f *testing.F) {
	f.Add("token=a.b.c&token_type_hint=access_token")
	f.Add("token=a&token=b")
	f.Add("client_assertion_type=" + url.QueryEscape(AssertionTypeJWTBearer) + "&client_assertion=x&client_id=c")
	f.Add("token=%")
	f.Add("a=b;c=d")
	f.Fuzz(func(t *testing.T, body string) {
		p, e := parseTokenParams(body)
		if e != nil {
			if e.Status != 400 || e.Code != codeInvalidRequest {
				t.Fatalf("bad refusal %+v", e)
			}
			return
		}
		form, err := url.ParseQuery(body)
		if err != nil {
			t.Fatalf("accepted a body url.ParseQuery refuses: %v", err)
		}
		for _, name := range tokenParamNames {
			if len(form[name]) > 1 {
				t.Fatalf("repeated %s accepted", name)
			}
		}
		switch {
		case len(p.Token) > maxPresentedToken, len(p.ClientID) > maxClientID, !printable(p.ClientID), !printable(p.TokenTypeHint):
			t.Fatalf("accepted %+v", p)
		case (p.ClientAssertion == "") != (p.ClientAssertionType == ""):
			t.Fatal("assertion without its type accepted")
		case p.Token != form.Get("token") || p.ClientSecret != form.Has("client_secret"):
			t.Fatalf("parameters changed: %+v", p)
		}
	})
}
