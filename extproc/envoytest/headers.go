package envoytest

import (
	"net/http"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerList is an ordered, lower-case header map, as Envoy keeps one.
type headerList struct{ kv [][2]string }

func fromHTTP(h http.Header) *headerList {
	l := &headerList{}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			l.add(strings.ToLower(k), v)
		}
	}
	return l
}

func (l *headerList) get(k string) (string, bool) {
	for _, p := range l.kv {
		if p[0] == k {
			return p[1], true
		}
	}
	return "", false
}

func (l *headerList) add(k, v string) { l.kv = append(l.kv, [2]string{k, v}) }

func (l *headerList) set(k, v string) {
	l.remove(k)
	l.add(k, v)
}

func (l *headerList) remove(k string) {
	out := l.kv[:0]
	for _, p := range l.kv {
		if p[0] != k {
			out = append(out, p)
		}
	}
	l.kv = out
}

// proto encodes the headers the way Envoy does with
// envoy.reloadable_features.send_header_raw_value: the value in raw_value.
func (l *headerList) proto() *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, p := range l.kv {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: p[0], RawValue: []byte(p[1])})
	}
	return m
}

// http returns the headers without pseudo-headers.
func (l *headerList) http() http.Header {
	h := http.Header{}
	for _, p := range l.kv {
		if strings.HasPrefix(p[0], ":") {
			continue
		}
		h.Add(p[0], p[1])
	}
	return h
}

// validName and validValue follow Envoy's HeaderUtility checks closely
// enough for a test double: RFC 9110 token characters (plus a leading ':'
// for pseudo-headers), and no NUL, CR or LF in values.
func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == ':' && i == 0 {
			continue
		}
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func validValue(v string) bool {
	return !strings.ContainsAny(v, "\x00\r\n")
}
