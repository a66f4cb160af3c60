package mutate

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/golden"
)

// categories lists a table's field lists by name.
func categories(rf RequestFields) []struct {
	name   string
	fields []RequestField
} {
	return []struct {
		name   string
		fields []RequestField
	}{
		{"stream", rf.Stream}, {"logprobs", rf.Logprobs}, {"top logprobs", rf.TopLogprobs},
		{"prompt logprobs", rf.PromptLogprobs}, {"n", rf.N}, {"logit bias", rf.LogitBias},
		{"max tokens", rf.MaxTokens}, {"reasoning", rf.Reasoning}, {"shape", rf.Shape},
		{"model", rf.Model}, {"prompt", rf.Prompt}, {"system", rf.System},
		{"messages", rf.Messages}, {"tools", rf.Tools},
	}
}

var pathRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\[\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[\])?)*$`)

func TestRequestFieldsTable(t *testing.T) {
	for _, f := range Formats() {
		rf := RequestFieldsFor(f)
		if rf.Format != f {
			t.Fatalf("%v: table of %v", f, rf.Format)
		}
		if len(rf.Docs) == 0 || len(rf.Endpoints) == 0 {
			t.Fatalf("%v: no docs or endpoints", f)
		}
		for _, c := range categories(rf) {
			seen := map[string]bool{}
			for _, fld := range c.fields {
				if !pathRE.MatchString(fld.Path) {
					t.Errorf("%v %s: malformed path %q", f, c.name, fld.Path)
				}
				if seen[fld.Path] {
					t.Errorf("%v %s: %q twice", f, c.name, fld.Path)
				}
				seen[fld.Path] = true
			}
		}
		leaks := f != FormatAnthropic && f != FormatOpenAIEmbeddings
		if leaks != (len(rf.Logprobs) > 0 && len(rf.TopLogprobs) > 0) {
			t.Errorf("%v: logprobs %v, top %v", f, rf.Logprobs, rf.TopLogprobs)
		}
		if len(rf.MaxTokens) == 0 && f != FormatOpenAIEmbeddings {
			t.Errorf("%v: no output length field", f)
		}
	}
	if !RequestFieldsFor(FormatOllama).StreamByDefault {
		t.Errorf("Ollama streams unless told not to")
	}
	u := RequestFieldsFor(FormatOpenAI)
	var lp RequestField
	for _, fld := range u.Logprobs {
		if fld.Path == "logprobs" {
			lp = fld
		}
	}
	if lp.Type != TypeAny || len(u.Endpoints) != 4 {
		t.Errorf("OpenAI union: logprobs %+v, %d endpoints", lp, len(u.Endpoints))
	}
	var b strings.Builder
	for _, f := range Formats() {
		rf := RequestFieldsFor(f)
		fmt.Fprintf(&b, "## %v\n\n", f)
		for _, ep := range rf.Endpoints {
			s := ""
			if ep.Stream {
				s = " (streams)"
			}
			fmt.Fprintf(&b, "- %s %s%s\n", ep.Method, ep.Pattern, s)
		}
		fmt.Fprintf(&b, "\ndocs: %s", strings.Join(rf.Docs, ", "))
		if rf.ProtoNames {
			b.WriteString("; every segment also in its proto field name (ProtoName)")
		}
		if rf.StreamByDefault {
			b.WriteString("; streams by default")
		}
		b.WriteString("\n\n| meaning | path | type | note |\n|---|---|---|---|\n")
		for _, c := range categories(rf) {
			for _, fld := range c.fields {
				fmt.Fprintf(&b, "| %s | `%s` | %v | %s |\n", c.name, fld.Path, fld.Type, strings.ReplaceAll(fld.Note, "|", `\|`))
			}
		}
		b.WriteString("\n")
	}
	golden.Check(t, filepath.Join("testdata", "golden", "formats", "request_fields.md.golden"), []byte(b.String()), *update)
}

func TestFormatForPath(t *testing.T) {
	tests := []struct {
		method, path string
		want         Format
		ok           bool
	}{
		{"POST", "/v1/chat/completions", FormatOpenAIChat, true},
		{"post", "/v1/completions", FormatOpenAICompletions, true},
		{"POST", "/v1/responses", FormatOpenAIResponses, true},
		{"POST", "/v1/embeddings", FormatOpenAIEmbeddings, true},
		{"POST", "/v1beta/models/gemini-2.0-flash:generateContent", FormatGemini, true},
		{"POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", FormatGemini, true},
		{"POST", "/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent", FormatGemini, true},
		{"POST", "/v1beta1/projects/p/locations/l/endpoints/123:streamGenerateContent", FormatGemini, true},
		{"POST", "/generate", FormatTGI, true},
		{"POST", "/generate_stream", FormatTGI, true},
		{"POST", "/completion", FormatLlamaCpp, true},
		{"POST", "/infill", FormatLlamaCpp, true},
		{"POST", "/api/generate", FormatOllama, true},
		{"POST", "/api/chat", FormatOllama, true},
		{"POST", "/v1/messages", FormatAnthropic, true},
		{"GET", "/v1/chat/completions", FormatOpenAI, false},
		{"POST", "/v1/models", FormatOpenAI, false},
		{"POST", "/v1beta/models/gemini-2.0-flash:countTokens", FormatOpenAI, false},
		{"POST", "/v1beta/models/:generateContent", FormatOpenAI, false},
		{"POST", "/v1beta/models/a:b:generateContent", FormatOpenAI, false},
		{"POST", "/v1beta/models/gemini/x:generateContent", FormatOpenAI, false},
	}
	for _, tc := range tests {
		got, ok := FormatForPath(tc.method, tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s %s: %v %v, want %v %v", tc.method, tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func TestProtoName(t *testing.T) {
	for in, want := range map[string]string{
		"generationConfig.responseLogprobs": "generation_config.response_logprobs",
		"contents":                          "contents",
		"systemInstruction":                 "system_instruction",
		"tools[].functionDeclarations":      "tools[].function_declarations",
	} {
		if got := ProtoName(in); got != want {
			t.Errorf("ProtoName(%q) = %q, want %q", in, got, want)
		}
	}
}
