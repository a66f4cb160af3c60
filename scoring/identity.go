package scoring

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// source is one configured identity source.
type source struct {
	kind   byte   // 'a' authorization, 'h' header, 'i' client IP
	header string // lower-case header name for 'h'
}

func parseSource(s string) (source, error) {
	switch {
	case s == "authorization":
		return source{kind: 'a', header: "authorization"}, nil
	case s == "client_ip":
		return source{kind: 'i'}, nil
	case strings.HasPrefix(s, "header:"):
		h := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(s, "header:")))
		if h == "" || strings.ContainsAny(h, " :\t") {
			return source{}, fmt.Errorf("%q: header name is empty or malformed", s)
		}
		return source{kind: 'h', header: h}, nil
	}
	return source{}, fmt.Errorf("%q is not authorization, client_ip or header:<name>", s)
}

// sessionIDString renders an id as the hex string used in decisions, logs
// and the admin API.
func sessionIDString(id [16]byte) string { return hex.EncodeToString(id[:]) }

func parseSessionID(s string) ([16]byte, error) {
	var id [16]byte
	if len(s) != 32 {
		return id, errors.New("session id must be 32 hex digits")
	}
	_, err := hex.Decode(id[:], []byte(s))
	return id, err
}

// identity derives session ids and links from a request.
type identity struct {
	sources []source
	xffName string
	hops    int
	macs    sync.Pool // of hash.Hash (HMAC-SHA256 keyed with the secret)
	key     hashKey   // keys the link hashes
}

func newIdentity(cfg *Config, secret []byte, linkKey hashKey) (*identity, error) {
	id := &identity{xffName: strings.ToLower(cfg.ClientIPHeader), hops: cfg.TrustedHops, key: linkKey}
	for _, s := range cfg.Identity {
		src, err := parseSource(s)
		if err != nil {
			return nil, err
		}
		id.sources = append(id.sources, src)
	}
	key := append([]byte(nil), secret...)
	id.macs.New = func() any { return hmac.New(sha256.New, key) }
	return id, nil
}

func header(r *Request, name string) string {
	if r.Header == nil {
		return ""
	}
	return r.Header(name)
}

// bearer extracts the credential of an Authorization header: the token of
// the Bearer scheme (RFC 6750 section 2.1; the scheme name is
// case-insensitive, RFC 9110 section 11.1), else the whole value (another
// scheme's credentials). A scheme without a token ("Bearer", "Bearer ")
// and a blank value are no credential at all: they would otherwise put
// every such client in one shared session.
func bearer(v string) string {
	v = strings.TrimSpace(v)
	if len(v) >= 6 && strings.EqualFold(v[:6], "bearer") && (len(v) == 6 || v[6] == ' ' || v[6] == '\t') {
		return strings.TrimSpace(v[6:])
	}
	return v
}

// sourcesOf returns the identity sources of r: its own (Request.Identity,
// validated by the configuration that names them) or the configured ones.
func (id *identity) sourcesOf(r *Request, buf *[8]source) []source {
	if r.Identity == nil {
		return id.sources
	}
	out := buf[:0]
	for _, s := range r.Identity {
		if src, err := parseSource(s); err == nil && len(out) < len(buf) {
			out = append(out, src)
		}
	}
	return out
}

// sourceValue is the credential a source yields for r ("" when absent).
func sourceValue(s source, r *Request, ip netip.Addr, haveIP bool) string {
	switch s.kind {
	case 'a':
		return bearer(header(r, "authorization"))
	case 'h':
		return strings.TrimSpace(header(r, s.header))
	case 'i':
		if haveIP {
			return ip.String()
		}
	}
	return ""
}

// Attributable reports whether a request can be attributed to a session
// of its own under cfg: one of its identity sources (sources, or
// cfg.Identity when nil) yields a credential, or the client address is
// known. A request with neither would share one anonymous session with
// every other such request.
func Attributable(cfg *Config, sources []string, r *Request) bool {
	if sources == nil {
		sources = cfg.Identity
	}
	id := identity{xffName: strings.ToLower(cfg.ClientIPHeader), hops: cfg.TrustedHops}
	ip, haveIP := id.clientIP(r)
	if haveIP {
		return true
	}
	for _, s := range sources {
		src, err := parseSource(s)
		if err == nil && sourceValue(src, r, ip, haveIP) != "" {
			return true
		}
	}
	return false
}

// clientIP returns the client address: from the trusted header when
// configured (the hops-th entry from the right, since each trusted proxy
// appends the address it received from), otherwise source.address.
func (id *identity) clientIP(r *Request) (netip.Addr, bool) {
	if id.xffName != "" {
		if v := header(r, id.xffName); v != "" {
			parts := strings.Split(v, ",")
			if i := len(parts) - id.hops; i >= 0 && i < len(parts) {
				if a, err := netip.ParseAddr(strings.TrimSpace(parts[i])); err == nil {
					return a.Unmap(), true
				}
			}
		}
	}
	return parseHostPort(r.SourceAddress)
}

// parseHostPort accepts "ip:port", "[ipv6]:port" and a bare address.
func parseHostPort(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

// sessionID is the HMAC of the first source that yields a credential
// (Request.Identity, or the configured sources, in order; a blank value
// or a bearer scheme without a token yields none). A request with none is
// anonymous: it is keyed by its client address when one is known, even
// when client_ip is not a configured source, so anonymous clients never
// share one session across addresses; with no address at all it falls in
// the single "anonymous" session (kind 0, counted as no_identity; extproc
// refuses such requests on guarded routes). Which header value is read
// when a header is sent twice is Request.Header's: the first; extproc
// refuses duplicate credential headers on guarded routes, because
// upstreams differ in which one they bill.
// buf is scratch space reused across calls (the MAC input is assembled in
// it so that hashing does not allocate).
func (id *identity) sessionID(r *Request, ip netip.Addr, haveIP bool, buf *[]byte) (out [16]byte, kind byte) {
	mac := id.macs.Get().(hash.Hash)
	defer func() {
		mac.Reset()
		id.macs.Put(mac)
	}()
	var sum [sha256.Size]byte
	var sbuf [8]source
	emit := func(s source, v string) {
		b := append((*buf)[:0], s.kind, 0)
		b = append(b, s.header...)
		b = append(b, 0)
		b = append(b, v...)
		mac.Write(b)
		*buf = b
		copy(out[:], mac.Sum(sum[:0]))
	}
	for _, s := range id.sourcesOf(r, &sbuf) {
		if v := sourceValue(s, r, ip, haveIP); v != "" {
			emit(s, v)
			return out, s.kind
		}
	}
	if haveIP {
		// Anonymous, keyed by the address: the same key as a client_ip
		// source, so configuring client_ip changes nothing for them.
		emit(source{kind: 'i'}, ip.String())
		return out, 'n'
	}
	mac.Write([]byte("anonymous"))
	copy(out[:], mac.Sum(sum[:0]))
	return out, 0
}

// links are the keyed hashes of one request's link values (0: absent).
type links [linkKinds]uint64

// ipBlock is the /24 (IPv4) or /48 (IPv6) around a: one customer, office or
// small hosting range.
func ipBlock(a netip.Addr) netip.Prefix {
	bitsN := 24
	if a.Is6() {
		bitsN = 48
	}
	p, _ := a.Prefix(bitsN)
	return p
}

const maxUALabel = 96

func (id *identity) links(r *Request, ip netip.Addr, haveIP bool) links {
	var l links
	if haveIP {
		p := ipBlock(ip)
		a := p.Addr().As16()
		var b [20]byte
		copy(b[:], "ip\x00")
		copy(b[3:], a[:])
		b[19] = byte(p.Bits())
		l[linkIP] = id.key.sum(0, b[:])
	}
	// Fields are chained (each hash seeds the next), so the boundary
	// between user-agent and shape is part of the hash.
	h := id.key.sumString(0, "client")
	h = id.key.sumString(h, uaLabel(r))
	var buf [160]byte
	l[linkClient] = id.key.sum(h, appendShape(buf[:0], r))
	return l
}

func uaLabel(r *Request) string {
	ua := header(r, "user-agent")
	if len(ua) > maxUALabel {
		ua = ua[:maxUALabel]
	}
	return ua
}

// appendShape renders the request shape: endpoint, model, sorted top-level
// keys and the values of the sampling parameters.
func appendShape(b []byte, r *Request) []byte {
	b = append(b, r.Endpoint...)
	b = append(b, ' ')
	b = append(b, r.Model...)
	b = append(b, " ["...)
	for i, k := range r.ShapeKeys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, k...)
	}
	b = append(b, "] n="...)
	b = strconv.AppendInt(b, int64(r.N), 10)
	b = append(b, " max_tokens="...)
	b = strconv.AppendInt(b, int64(r.MaxTokens), 10)
	b = append(b, " temperature="...)
	if r.Temperature != nil {
		b = strconv.AppendFloat(b, *r.Temperature, 'g', 4, 64)
	}
	b = append(b, " stream="...)
	b = strconv.AppendBool(b, r.Stream)
	b = append(b, " logprobs="...)
	b = strconv.AppendBool(b, r.Logprobs)
	b = append(b, " top_logprobs="...)
	b = strconv.AppendInt(b, int64(r.TopLogprobs), 10)
	b = append(b, " logit_bias="...)
	b = strconv.AppendBool(b, r.LogitBiasSize > 0)
	b = append(b, " echo="...)
	b = strconv.AppendBool(b, r.Echo)
	return b
}

// linkLabel is the display label of one link of r (built only when a
// cluster is created).
func linkLabel(kind int, r *Request, ip netip.Addr) string {
	if kind == linkIP {
		return ipBlock(ip).String()
	}
	return string(appendShape([]byte(uaLabel(r)+" | "), r))
}

// CheckIdentitySources validates a list of identity sources (the syntax of
// Config.Identity), for configuration that names them elsewhere (per-route
// identity).
func CheckIdentitySources(srcs []string) error {
	if len(srcs) == 0 {
		return errors.New("at least one source is needed")
	}
	for i, s := range srcs {
		if _, err := parseSource(s); err != nil {
			return fmt.Errorf("[%d]: %w", i, err)
		}
	}
	return nil
}
