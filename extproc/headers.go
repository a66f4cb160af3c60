package extproc

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// headerValue returns a header's value. Envoy sends values in raw_value
// (HttpHeaders.headers: "The header value is encoded in the raw_value
// field"); value is read only as a fallback for older data planes.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

// getHeader returns the first value of a lower-case header name. Envoy
// lower-cases every key it sends (HttpHeaders.headers), so no case folding is
// needed; header maps are small enough that a scan beats building a map.
func getHeader(m *corev3.HeaderMap, name string) string {
	for _, h := range m.GetHeaders() {
		if h.GetKey() == name {
			return headerValue(h)
		}
	}
	return ""
}

func hasHeader(m *corev3.HeaderMap, name string) bool {
	for _, h := range m.GetHeaders() {
		if h.GetKey() == name {
			return true
		}
	}
	return false
}

// mutation accumulates one reply's header changes.
type mutation struct {
	set    []*corev3.HeaderValueOption
	remove []string
}

// setHeader overwrites a header. The value goes in raw_value only: Envoy
// reads raw_value and treats a HeaderValue with only `value` as an empty
// header (HeaderMutation.set_headers: "The header value is encoded in the
// raw_value field"). The append_action is explicit because its zero value is
// APPEND_IF_EXISTS_OR_ADD; the legacy `append` field stays unset, which
// ext_proc documents as false.
func (m *mutation) setHeader(key, value string) {
	m.set = append(m.set, &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, RawValue: []byte(value)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	})
}

func (m *mutation) removeHeader(key string) { m.remove = append(m.remove, key) }

func (m *mutation) empty() bool { return len(m.set) == 0 && len(m.remove) == 0 }

func (m *mutation) proto() *extprocv3.HeaderMutation {
	if m.empty() {
		return nil
	}
	return &extprocv3.HeaderMutation{SetHeaders: m.set, RemoveHeaders: m.remove}
}

// mediaType returns the lower-case media type of a content-type value,
// without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

func isSSE(mt string) bool { return mt == "text/event-stream" }

// isJSON accepts application/json and structured-syntax +json types.
func isJSON(mt string) bool {
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

type encoding uint8

const (
	encIdentity encoding = iota
	encGzip
	encUnknown
)

func parseEncoding(ce string) encoding {
	switch strings.ToLower(strings.TrimSpace(ce)) {
	case "", "identity":
		return encIdentity
	case "gzip", "x-gzip":
		return encGzip
	}
	return encUnknown
}

func parseStatus(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// endpointOf maps a request path onto the scorer's endpoint names. Suffix
// matching keeps prefixed deployments (/openai/v1/chat/completions) working.
func endpointOf(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return "chat"
	case strings.HasSuffix(path, "/completions"):
		return "completions"
	case strings.HasSuffix(path, "/responses"):
		return "responses"
	case strings.HasSuffix(path, "/embeddings"):
		return "embeddings"
	}
	return ""
}
