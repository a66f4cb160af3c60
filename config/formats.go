package config

import (
	"fmt"
	"strings"

	"github.com/distillguard/distillguard/mutate"
)

// FormatPath maps request paths onto the inference API they speak
// (processing.formats), for paths the built-in endpoint tables do not know
// (mutate.RequestFieldsFor): a gateway that serves Gemini under
// /google/generate, a TGI deployment mounted at /tgi/. Exactly one of
// PathPrefix and PathSuffix is set; the first entry that matches wins, and
// entries are tried before the built-in paths.
type FormatPath struct {
	PathPrefix string `yaml:"path_prefix"`
	PathSuffix string `yaml:"path_suffix"`
	// Format is a mutate format name: openai, openai-chat,
	// openai-completions, openai-responses, openai-embeddings, gemini, tgi,
	// llamacpp, ollama, anthropic.
	Format string `yaml:"format"`

	format mutate.Format
}

// resolveFormats checks processing.formats and parses the format names,
// and builds the table of built-in endpoints FormatFor matches.
func (p *Processing) resolveFormats() []error {
	p.paths = mutate.NewPathTable()
	var errs []error
	for i := range p.Formats {
		fp := &p.Formats[i]
		key := fmt.Sprintf("processing.formats[%d]", i)
		switch {
		case (fp.PathPrefix == "") == (fp.PathSuffix == ""):
			errs = append(errs, fmt.Errorf("%s: exactly one of path_prefix and path_suffix is needed", key))
		case fp.PathPrefix != "" && !strings.HasPrefix(fp.PathPrefix, "/"):
			errs = append(errs, fmt.Errorf("%s.path_prefix: %q must start with /", key, fp.PathPrefix))
		case strings.ContainsAny(fp.PathPrefix+fp.PathSuffix, "?#"):
			errs = append(errs, fmt.Errorf("%s: a path has no query or fragment", key))
		}
		f, err := mutate.ParseFormat(fp.Format)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.format: %q is not one of %s", key, fp.Format, formatNames()))
			continue
		}
		fp.format = f
	}
	return errs
}

func formatNames() string {
	var names []string
	for _, f := range mutate.Formats() {
		names = append(names, f.String())
	}
	return strings.Join(names, ", ")
}

// FormatFor returns the API format of a request to path (normalized,
// without query) with method, and whether any table knew it: the
// configured processing.formats first, then the built-in endpoints
// (mutate.FormatForPath), under any leading prefix a gateway mounts them
// at (/openai/v1/chat/completions, /gemini/v1beta/models/m:generateContent).
// The prefix is stripped whole segments at a time, and never down to the
// bare "/" (TGI's compatibility route), which every path would otherwise
// match, nor to "/completions" (see below).
func (c *Config) FormatFor(method, path string) (mutate.Format, bool) {
	for i := range c.Processing.Formats {
		fp := &c.Processing.Formats[i]
		if fp.PathPrefix != "" && strings.HasPrefix(path, fp.PathPrefix) ||
			fp.PathSuffix != "" && strings.HasSuffix(path, fp.PathSuffix) {
			return fp.format, true
		}
	}
	paths := c.Processing.paths
	if paths == nil {
		// A Config not made by Parse (a literal in a test).
		paths = mutate.NewPathTable()
	}
	if f, ok := paths.Lookup(method, path); ok {
		return f, true
	}
	for rest := path; ; {
		i := strings.IndexByte(rest[min(1, len(rest)):], '/')
		if i < 0 {
			return mutate.FormatOpenAI, false
		}
		rest = rest[i+1:]
		if rest == "/" {
			return mutate.FormatOpenAI, false
		}
		if rest == "/completions" {
			// Under a prefix this is OpenAI's legacy completions
			// (Azure OpenAI: /openai/deployments/{d}/completions) far
			// more often than llama.cpp's alias of /completion; the
			// caller reads an unknown path by its OpenAI suffix.
			return mutate.FormatOpenAI, false
		}
		if f, ok := paths.Lookup(method, rest); ok {
			return f, true
		}
	}
}
