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

// bearer extracts the token of an Authorization header
// (RFC 6750 section 2.1: "Bearer" is case-insensitive).
func bearer(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return v
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

// sessionID is the HMAC of the first present source. ok is false when no
// source yields a value (the request is scored under a shared "anonymous"
// id so it is still counted).
// buf is scratch space reused across calls (the MAC input is assembled in
// it so that hashing does not allocate).
func (id *identity) sessionID(r *Request, ip netip.Addr, haveIP bool, buf *[]byte) (out [16]byte, kind byte) {
	mac := id.macs.Get().(hash.Hash)
	defer func() {
		mac.Reset()
		id.macs.Put(mac)
	}()
	var sum [sha256.Size]byte
	for _, s := range id.sources {
		var v string
		switch s.kind {
		case 'a':
			v = bearer(header(r, "authorization"))
		case 'h':
			v = header(r, s.header)
		case 'i':
			if haveIP {
				v = ip.String()
			}
		}
		if v == "" {
			continue
		}
		b := append((*buf)[:0], s.kind, 0)
		b = append(b, s.header...)
		b = append(b, 0)
		b = append(b, v...)
		mac.Write(b)
		*buf = b
		copy(out[:], mac.Sum(sum[:0]))
		return out, s.kind
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
