package config

import (
	"strings"
	"testing"

	"github.com/distillguard/distillguard/mutate"
)

func TestFormatFor(t *testing.T) {
	c, err := Parse([]byte(`
processing:
  formats:
    - path_prefix: /google/
      format: gemini
    - path_suffix: /tgi/go
      format: tgi
`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		want         mutate.Format
		known        bool
	}{
		{"POST", "/v1/chat/completions", mutate.FormatOpenAIChat, true},
		{"POST", "/openai/v1/chat/completions", mutate.FormatOpenAIChat, true},
		{"POST", "/v1/completions", mutate.FormatOpenAICompletions, true},
		{"POST", "/v1/embeddings", mutate.FormatOpenAIEmbeddings, true},
		{"POST", "/v1beta/models/gemini-2.0-flash:generateContent", mutate.FormatGemini, true},
		{"POST", "/gw/v1beta/models/gemini-2.0-flash:streamGenerateContent", mutate.FormatGemini, true},
		{"POST", "/v1/projects/p/locations/us-central1/publishers/google/models/m:generateContent", mutate.FormatGemini, true},
		{"POST", "/google/anything", mutate.FormatGemini, true},
		{"POST", "/a/tgi/go", mutate.FormatTGI, true},
		{"POST", "/generate_stream", mutate.FormatTGI, true},
		{"POST", "/tgi/generate", mutate.FormatTGI, true},
		{"POST", "/", mutate.FormatTGI, true},
		{"POST", "/completion", mutate.FormatLlamaCpp, true},
		{"POST", "/api/chat", mutate.FormatOllama, true},
		{"POST", "/ollama/api/generate", mutate.FormatOllama, true},
		{"POST", "/v1/messages", mutate.FormatAnthropic, true},
		// Not stripped down to TGI's "/": an unknown path stays unknown.
		{"POST", "/unknown/path", mutate.FormatOpenAI, false},
		{"GET", "/api/chat", mutate.FormatOpenAI, false},
		{"POST", "/completions", mutate.FormatLlamaCpp, true},
		{"POST", "/openai/deployments/d/completions", mutate.FormatOpenAI, false},
	}
	for _, tc := range cases {
		got, known := c.FormatFor(tc.method, tc.path)
		if got != tc.want || known != tc.known {
			t.Errorf("FormatFor(%s %s) = %v %v, want %v %v", tc.method, tc.path, got, known, tc.want, tc.known)
		}
	}
}

func TestFormatPathsValidated(t *testing.T) {
	cases := []struct{ yaml, msg string }{
		{"- path_prefix: /a\n      path_suffix: /b\n      format: tgi", "exactly one of path_prefix and path_suffix"},
		{"- format: tgi", "exactly one of path_prefix and path_suffix"},
		{"- path_prefix: a\n      format: tgi", "must start with /"},
		{"- path_suffix: /a?alt=sse\n      format: gemini", "no query"},
		{"- path_prefix: /a\n      format: bard", `processing.formats[0].format: "bard" is not one of openai,`},
		{"- path_prefix: /a\n      formatt: tgi", "formatt"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte("processing:\n  formats:\n    " + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.msg)
		}
	}
}
