package scoring

import (
	"net/http"
	"testing"
)

func testIdentity(t *testing.T, sources ...string) *identity {
	t.Helper()
	cfg := DefaultConfig()
	if sources != nil {
		cfg.Identity = sources
	}
	id, err := newIdentity(&cfg, []byte("secret"), hashKey{})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func req(addr string, kv ...string) *Request {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &Request{SourceAddress: addr, Header: func(n string) string { return h.Get(n) }}
}

func (id *identity) of(r *Request) ([16]byte, byte) {
	ip, ok := id.clientIP(r)
	var buf []byte
	return id.sessionID(r, ip, ok, &buf)
}

// TestIdentityRules: which credential is the session.
func TestIdentityRules(t *testing.T) {
	id := testIdentity(t)
	key, _ := id.of(req("198.51.100.1:1", "authorization", "Bearer k1"))
	same := func(a, b *Request) bool {
		x, _ := id.of(a)
		y, _ := id.of(b)
		return x == y
	}
	// The bearer token is the credential, whatever the scheme's case and
	// the spacing, and whatever else the request carries.
	if k, kind := id.of(req("203.0.113.5:9", "authorization", "bearer   k1 ", "x-api-key", "junk")); k != key || kind != 'a' {
		t.Error("the same bearer token gave another session")
	}
	// An empty or blank credential is none: the next source decides, never
	// one session shared by every client sending "Bearer ".
	for _, blank := range []string{"Bearer ", "Bearer", "  ", "bearer\t"} {
		a := req("198.51.100.1:1", "authorization", blank)
		b := req("198.51.100.2:1", "authorization", blank)
		if same(a, b) {
			t.Errorf("authorization %q: two addresses share a session", blank)
		}
		if !same(a, req("198.51.100.1:2")) {
			t.Errorf("authorization %q is not treated as absent", blank)
		}
	}
	if same(req("", "x-api-key", " "), req("", "x-api-key", "  ")) == false {
		t.Error("blank x-api-key values differ")
	}
	// A route's own sources: an x-api-key upstream ignores Authorization,
	// so a junk Authorization header cannot rotate the session.
	r1 := req("", "authorization", "Bearer junk-1", "x-api-key", "real")
	r2 := req("", "authorization", "Bearer junk-2", "x-api-key", "real")
	r1.Identity, r2.Identity = []string{"header:x-api-key", "client_ip"}, []string{"header:x-api-key", "client_ip"}
	if !same(r1, r2) {
		t.Error("per-request sources did not ignore Authorization")
	}
	if same(req("", "authorization", "Bearer junk-1", "x-api-key", "real"), req("", "authorization", "Bearer junk-2", "x-api-key", "real")) {
		t.Error("the default sources ignored Authorization")
	}
}

// TestAnonymousByAddress: anonymous clients are keyed by their address
// even when client_ip is not a configured source; only a request with no
// address at all falls into the shared anonymous session.
func TestAnonymousByAddress(t *testing.T) {
	id := testIdentity(t, "authorization")
	a, kindA := id.of(req("198.51.100.1:1"))
	b, _ := id.of(req("198.51.100.2:1"))
	a2, _ := id.of(req("198.51.100.1:7"))
	if a == b || a != a2 || kindA == 0 {
		t.Errorf("anonymous by address: %x %x %x kind %c", a, b, a2, kindA)
	}
	withIP := testIdentity(t, "authorization", "client_ip")
	if k, _ := withIP.of(req("198.51.100.1:1")); k != a {
		t.Error("configuring client_ip changed anonymous sessions")
	}
	n1, kind := id.of(req(""))
	n2, _ := id.of(req("", "user-agent", "other"))
	if kind != 0 || n1 != n2 {
		t.Errorf("no address: kind %d, sessions equal %v", kind, n1 == n2)
	}
	cfg := DefaultConfig()
	if Attributable(&cfg, nil, req("")) || !Attributable(&cfg, nil, req("198.51.100.1:1")) || !Attributable(&cfg, nil, req("", "authorization", "Bearer x")) {
		t.Error("Attributable")
	}
	if Attributable(&cfg, nil, req("", "authorization", "Bearer ")) {
		t.Error("an empty bearer token attributes a request")
	}
	if Attributable(&cfg, []string{"header:x-api-key"}, req("", "authorization", "Bearer x")) {
		t.Error("a source the route does not use attributes a request")
	}
}
