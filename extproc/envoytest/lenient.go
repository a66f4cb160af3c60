package envoytest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"unicode"
)

// A model of how vLLM reads the request fields that leak the model:
// Python's json.loads (pyjson.go), then pydantic v2 in lax mode on the
// fields as vLLM declares them (vllm/entrypoints/openai/protocol.py:
// ChatCompletionRequest, CompletionRequest, ResponsesRequest), then what
// to_sampling_params makes of them. The coercions follow pydantic-core
// (src/input/shared.rs: str_as_bool, str_as_int with clean_int_str,
// float_as_int; https://docs.pydantic.dev/latest/concepts/conversion_table/),
// in their most permissive released form, and the model validators that
// would reject some inputs earlier (check_logprobs) are left out: the
// model is at least as lenient as any vLLM, so a request it reads as safe
// is safe for all of them. llama.cpp's n_probs and TGI's top_n_tokens are
// read as alternatives counts too.

// LenientReading is what the upstream would act on.
type LenientReading struct {
	// Valid: JSON and the guarded fields passed validation; otherwise the
	// upstream answers with an error and acts on nothing (Err says why).
	Valid bool
	Err   string
	// Endpoint is chat, completions or responses.
	Endpoint string
	// Model is the model named (lax str: only a str validates).
	Model string
	// Logprobs: the sampling parameters ask for logprobs (of the output,
	// or, PromptLogprobs, of the prompt).
	Logprobs       bool
	PromptLogprobs bool
	// Alternatives is the largest count of alternatives asked for.
	Alternatives *big.Int
	// N and BestOf are the choices asked for (nil: unset).
	N, BestOf *big.Int
	// LogitBias: a non-empty logit_bias; Bias: it or another field that
	// moves logits (allowed_token_ids, bad_words, logits_processors,
	// vllm_xargs) is set and not empty.
	LogitBias, Bias bool
}

// Asks reports whether the reading asks for logprobs in any form.
func (r LenientReading) Asks() bool { return r.Logprobs || r.PromptLogprobs }

// Limits are what a request policy guarantees, for Violation.
type Limits struct {
	MaxTopLogprobs            int // < 0: none
	MaxN                      int // <= 0: none
	DropLogitBias             bool
	DropLogitBiasWithLogprobs bool
	StripLogprobs             bool
}

// Violation says how r breaks what l guarantees ("" when it does not).
func (r LenientReading) Violation(l Limits) string {
	if !r.Valid {
		return ""
	}
	if l.StripLogprobs && r.Asks() {
		return "logprobs asked for under strip_logprobs"
	}
	if l.MaxTopLogprobs >= 0 && r.Asks() && r.Alternatives != nil && r.Alternatives.Cmp(big.NewInt(int64(l.MaxTopLogprobs))) > 0 {
		return fmt.Sprintf("%v alternatives above the cap of %d", r.Alternatives, l.MaxTopLogprobs)
	}
	lim := big.NewInt(int64(l.MaxN))
	if l.MaxN > 0 && (r.N != nil && r.N.Cmp(lim) > 0 || r.BestOf != nil && r.BestOf.Cmp(lim) > 0) {
		return fmt.Sprintf("n %v / best_of %v above the cap of %d", r.N, r.BestOf, l.MaxN)
	}
	if l.DropLogitBias && r.Bias {
		return "a logit bias under drop_logit_bias"
	}
	if l.DropLogitBiasWithLogprobs && r.Bias && r.Asks() {
		return "a logit bias together with logprobs"
	}
	return ""
}

// LenientEndpoint is the endpoint a lenient server routes path to: decoded
// as uvicorn decodes it, dot segments and repeated slashes resolved as the
// most forgiving routers do, matched by suffix; "" for anything else.
func LenientEndpoint(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	p = strings.TrimSuffix(path.Clean("/"+p), "/")
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		return "chat"
	case strings.HasSuffix(p, "/completions"):
		return "completions"
	case strings.HasSuffix(p, "/responses"):
		return "responses"
	}
	return ""
}

// ReadLenient reads body as vLLM would on endpoint (chat, completions or
// responses).
func ReadLenient(endpoint string, body []byte) LenientReading {
	r := LenientReading{Endpoint: endpoint}
	v, err := PyLoads(body)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	o, ok := v.(*PyObject)
	if !ok {
		r.Err = "not an object"
		return r
	}
	fail := func(name string) LenientReading {
		r.Valid = false
		r.Err = "pydantic: " + name
		return r
	}
	optInt := func(name string) (*big.Int, bool) {
		x, ok := o.Get(name)
		if !ok || x == nil {
			return nil, true
		}
		n, ok := laxInt(x)
		return n, ok
	}
	optBool := func(name string, def bool) (bool, bool) {
		x, ok := o.Get(name)
		if !ok || x == nil {
			return def, true
		}
		return laxBool(x)
	}
	r.Valid = true
	if m, ok := o.Get("model"); ok && m != nil {
		s, ok := m.(PyStr)
		if !ok {
			return fail("model")
		}
		r.Model = string(s)
	}
	alts := func(n *big.Int) {
		if n != nil && (r.Alternatives == nil || n.Cmp(r.Alternatives) > 0) {
			r.Alternatives = n
		}
	}
	var ok2 bool
	if r.N, ok2 = optInt("n"); !ok2 {
		return fail("n")
	}
	if r.BestOf, ok2 = optInt("best_of"); !ok2 {
		return fail("best_of")
	}
	prompt, ok := optInt("prompt_logprobs")
	if !ok {
		return fail("prompt_logprobs")
	}
	for _, name := range []string{"n_probs", "top_n_tokens"} {
		n, ok := optInt(name)
		if !ok {
			return fail(name)
		}
		if n != nil && n.Sign() > 0 {
			r.Logprobs = true
			alts(n)
		}
	}
	switch endpoint {
	case "chat":
		lp, ok := optBool("logprobs", false)
		if !ok {
			return fail("logprobs")
		}
		top, ok := optInt("top_logprobs")
		if !ok {
			return fail("top_logprobs")
		}
		if top == nil {
			top = big.NewInt(0)
		}
		echo, ok := optBool("echo", false)
		if !ok {
			return fail("echo")
		}
		if lp {
			r.Logprobs = true
			alts(top)
		}
		if prompt == nil && echo {
			prompt = top
		}
	case "completions":
		lp, ok := optInt("logprobs")
		if !ok {
			return fail("logprobs")
		}
		echo, ok := optBool("echo", false)
		if !ok {
			return fail("echo")
		}
		if lp != nil {
			r.Logprobs = true
			alts(lp)
		}
		if prompt == nil && echo {
			prompt = lp
		}
	case "responses":
		top, ok := optInt("top_logprobs")
		if !ok {
			return fail("top_logprobs")
		}
		if inc, ok := o.Get("include"); ok && inc != nil {
			l, ok := inc.([]any)
			if !ok {
				return fail("include")
			}
			for _, it := range l {
				s, ok := it.(PyStr)
				if !ok {
					return fail("include")
				}
				if s == "message.output_text.logprobs" {
					r.Logprobs = true
				}
			}
		}
		if top != nil && top.Sign() > 0 {
			r.Logprobs = true
		}
		alts(top)
	}
	if prompt != nil {
		r.PromptLogprobs = true
		alts(prompt)
	}
	// The logit-moving fields: a non-empty, valid value moves logits.
	if x, ok := o.Get("logit_bias"); ok && x != nil {
		d, ok := x.(*PyObject)
		if !ok {
			return fail("logit_bias")
		}
		for _, k := range d.Keys {
			if _, ok := laxFloat(d.Values[k]); !ok {
				return fail("logit_bias")
			}
		}
		r.LogitBias = len(d.Keys) > 0
		r.Bias = r.Bias || r.LogitBias
	}
	for _, name := range []string{"allowed_token_ids", "bad_words", "logits_processors"} {
		if x, ok := o.Get(name); ok && x != nil {
			l, ok := x.([]any)
			if !ok {
				return fail(name)
			}
			for _, it := range l {
				if name == "allowed_token_ids" {
					if _, ok := laxInt(it); !ok {
						return fail(name)
					}
				}
			}
			r.Bias = r.Bias || len(l) > 0
		}
	}
	if x, ok := o.Get("vllm_xargs"); ok && x != nil {
		d, ok := x.(*PyObject)
		if !ok {
			return fail("vllm_xargs")
		}
		r.Bias = r.Bias || len(d.Keys) > 0
	}
	return r
}

// laxInt is pydantic's lax int from a Python value (Python input mode:
// FastAPI validates the decoded dict).
func laxInt(x any) (*big.Int, bool) {
	switch v := x.(type) {
	case PyInt:
		return v.Int, true
	case bool:
		if v {
			return big.NewInt(1), true
		}
		return big.NewInt(0), true
	case float64:
		// float_as_int: finite, integral, strictly inside the i64 range.
		if math.IsInf(v, 0) || math.IsNaN(v) || v != math.Trunc(v) || v <= math.MinInt64 || v >= math.MaxInt64 {
			return nil, false
		}
		return big.NewInt(int64(v)), true
	case PyStr:
		return strAsInt(string(v))
	}
	return nil, false
}

// strAsInt is str_as_int with clean_int_str: surrounding whitespace, a
// unary plus, leading zeros, a fraction of zeros and underscores between
// digits are all accepted.
func strAsInt(s string) (*big.Int, bool) {
	if len(s) > pyMaxIntDigits {
		return nil, false
	}
	if n, ok := new(big.Int).SetString(s, 10); ok && !strings.ContainsAny(s, "+_") && (s == "0" || s[0] != '0' && !strings.HasPrefix(s, "-0")) {
		return n, true
	}
	s = strings.TrimFunc(s, unicode.IsSpace)
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		if strings.HasPrefix(rest, "-") {
			return nil, false
		}
		s = rest
	}
	neg := false
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		if strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
			return nil, false
		}
		neg, s = true, rest
	}
	// strip_leading_zeros
	if s == "" {
		return nil, false
	}
	switch c := s[0]; {
	case c == '0':
		i := 1
		for i < len(s) && (s[i] == '0' || s[i] == '_') {
			i++
		}
		switch {
		case i == len(s):
			s = s[len(s)-1:]
		case s[i] >= '1' && s[i] <= '9' || s[i] == '-':
			s = s[i:]
		case s[i] == '.':
			s = s[i-1:]
		default:
			return nil, false
		}
	case c >= '1' && c <= '9' || c == '-':
	default:
		return nil, false
	}
	if i := strings.IndexByte(s, '.'); i >= 0 {
		frac := s[i+1:]
		if frac != "" && strings.Trim(frac, "0") == "" {
			s = s[:i]
		}
	}
	if strings.Contains(s, "_") {
		if strings.HasPrefix(s, "_") || strings.HasSuffix(s, "_") || strings.Contains(s, "__") {
			return nil, false
		}
		s = strings.ReplaceAll(s, "_", "")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return nil, false
		}
	}
	if s == "" {
		return nil, false
	}
	n, ok := new(big.Int).SetString(s, 10)
	if ok && neg {
		n.Neg(n)
	}
	return n, ok
}

// laxBool is pydantic's lax bool.
func laxBool(x any) (bool, bool) {
	switch v := x.(type) {
	case bool:
		return v, true
	case PyInt:
		switch {
		case v.IsInt64() && v.Int64() == 0:
			return false, true
		case v.IsInt64() && v.Int64() == 1:
			return true, true
		}
	case float64:
		switch v {
		case 0:
			return false, true
		case 1:
			return true, true
		}
	case PyStr:
		s := string(v)
		if s == "0" {
			return false, true
		}
		if s == "1" {
			return true, true
		}
		for _, f := range []string{"f", "n", "no", "off", "false"} {
			if strings.EqualFold(s, f) {
				return false, true
			}
		}
		for _, t := range []string{"t", "y", "on", "yes", "true"} {
			if strings.EqualFold(s, t) {
				return true, true
			}
		}
	}
	return false, false
}

// laxFloat is pydantic's lax float (allow_inf_nan by default).
func laxFloat(x any) (float64, bool) {
	switch v := x.(type) {
	case float64:
		return v, true
	case PyInt:
		f, _ := new(big.Float).SetInt(v.Int).Float64()
		return f, true
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	case PyStr:
		var f float64
		s := strings.ReplaceAll(strings.TrimFunc(string(v), unicode.IsSpace), "_", "")
		if _, err := fmt.Sscan(s, &f); err == nil {
			return f, true
		}
		switch strings.ToLower(strings.TrimLeft(s, "+-")) {
		case "inf", "infinity", "nan":
			return 0, true
		}
	}
	return 0, false
}

// LenientRequest is one request a LenientUpstream received.
type LenientRequest struct {
	Path   string
	Header http.Header
	Body   []byte
	// Readings are what the body reads as: as sent, and decoded when it is
	// labelled gzip (a server that decodes request encodings).
	Readings []LenientReading
}

// LenientUpstream is an http.Handler playing a vLLM-like server: it reads
// each request with ReadLenient, records it, and answers a small chat
// completion (404 for paths no OpenAI endpoint ends with). Safe for
// concurrent use.
type LenientUpstream struct {
	mu   sync.Mutex
	reqs []LenientRequest
}

// Requests returns the requests received so far.
func (u *LenientUpstream) Requests() []LenientRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]LenientRequest(nil), u.reqs...)
}

func (u *LenientUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	lr := LenientRequest{Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	ep := LenientEndpoint(r.RequestURI)
	if ep != "" {
		lr.Readings = append(lr.Readings, ReadLenient(ep, body))
		if strings.Contains(strings.ToLower(r.Header.Get("Content-Encoding")), "gzip") {
			if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
				if dec, err := io.ReadAll(io.LimitReader(zr, 64<<20)); err == nil {
					lr.Readings = append(lr.Readings, ReadLenient(ep, dec))
				}
			}
		}
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, lr)
	u.mu.Unlock()
	if ep == "" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"logprobs":null,"finish_reason":"stop"}]}`)
}
