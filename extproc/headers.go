package extproc

import (
	"net/url"
	"path"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/mutate"
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

// headerCount is the number of entries of a lower-case header name: Envoy
// sends a header that arrived several times as several entries.
func headerCount(m *corev3.HeaderMap, name string) int {
	n := 0
	for _, h := range m.GetHeaders() {
		if h.GetKey() == name {
			n++
		}
	}
	return n
}

// headerValues returns every value of a lower-case header name.
func headerValues(m *corev3.HeaderMap, name string) []string {
	var out []string
	for _, h := range m.GetHeaders() {
		if h.GetKey() == name {
			out = append(out, headerValue(h))
		}
	}
	return out
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

// isNDJSON accepts the media types newline-delimited JSON is served under:
// application/x-ndjson (Ollama, https://docs.ollama.com/api/streaming) and
// the unregistered application/ndjson and application/jsonl.
func isNDJSON(mt string) bool {
	return mt == "application/x-ndjson" || mt == "application/ndjson" || mt == "application/jsonl"
}

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

// charsetOK reports whether a content-type's charset parameter, if any, is
// UTF-8 (RFC 8259 section 8.1: JSON exchanged between systems is UTF-8;
// RFC 9110 section 8.3.2: parameter values may be quoted, names and the
// charset are case-insensitive).
func charsetOK(ct string) bool {
	_, params, _ := strings.Cut(ct, ";")
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "charset") {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"`)
		if !strings.EqualFold(v, "utf-8") && !strings.EqualFold(v, "utf8") {
			return false
		}
	}
	return true
}

func parseStatus(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// normalizePath is the path as upstream servers route it, for matching
// routes and endpoints: without query and fragment, percent-decoded once
// (uvicorn hands Starlette the decoded path, so /v1/%63hat/completions
// reaches the chat handler), with dot segments resolved and repeated
// slashes merged (RFC 3986 section 5.2.4; servers that do neither answer
// such paths with 404, servers that do reach the handler the normalized
// path names, so matching the normalized path never picks a more lenient
// route than the one that serves the request).
func normalizePath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if strings.IndexByte(p, '%') >= 0 {
		if u, err := url.PathUnescape(p); err == nil {
			p = u
		}
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") && strings.HasPrefix(p, "/") {
		return p
	}
	trailing := strings.HasSuffix(p, "/")
	p = path.Clean("/" + p)
	if trailing && p != "/" {
		p += "/"
	}
	return p
}

// endpointOf maps a request path (normalized) onto the scorer's endpoint
// names. Suffix matching keeps prefixed deployments
// (/openai/v1/chat/completions) working.
func endpointOf(path string) string {
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
	case strings.HasSuffix(path, "/messages"):
		return "messages" // Anthropic Messages API
	}
	return ""
}

// formatOf is the API format of a request: the configured and built-in
// paths (config.FormatFor), else, for a path neither knows, the OpenAI
// kind its suffix names (endpointOf keeps deployments that mount the
// OpenAI routes under arbitrary paths working), else FormatOpenAI, which
// reads every format's guarded fields.
func formatOf(cfg *config.Config, method, path string) mutate.Format {
	if method == "" {
		method = "POST"
	}
	if f, ok := cfg.FormatFor(method, path); ok {
		return f
	}
	return mutateEndpoint(endpointOf(path))
}

// pathModel is the model a Gemini path names: models/{model}:method or
// tunedModels/{model}:method, under any prefix (Vertex AI's
// .../publishers/google/models/{model}:method included); "" elsewhere.
func pathModel(f mutate.Format, path string) string {
	if f != mutate.FormatGemini {
		return ""
	}
	for _, seg := range [...]string{"/models/", "/tunedModels/"} {
		i := strings.LastIndex(path, seg)
		if i < 0 {
			continue
		}
		m, _, ok := strings.Cut(path[i+len(seg):], ":")
		if ok && m != "" && !strings.Contains(m, "/") {
			return m
		}
	}
	return ""
}

// pathStreams reports an endpoint that streams whatever the body says
// (mutate.Endpoint.Stream): Gemini's :streamGenerateContent, TGI's
// /generate_stream.
func pathStreams(f mutate.Format, path string) bool {
	switch f {
	case mutate.FormatGemini:
		return strings.HasSuffix(path, ":streamGenerateContent")
	case mutate.FormatTGI:
		return strings.HasSuffix(path, "/generate_stream")
	}
	return false
}

// mutateEndpoint is the request reader's view of an endpoint name.
func mutateEndpoint(ep string) mutate.Format {
	switch ep {
	case "chat":
		return mutate.FormatOpenAIChat
	case "completions":
		return mutate.FormatOpenAICompletions
	case "responses":
		return mutate.FormatOpenAIResponses
	case "embeddings":
		return mutate.FormatOpenAIEmbeddings
	}
	return mutate.FormatOpenAI
}
