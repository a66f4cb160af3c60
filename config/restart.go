package config

import (
	"reflect"
	"slices"
	"strings"
)

// RestartRequired returns the settings that differ between prev and c but
// cannot take effect by swapping c in on SIGHUP, as dotted YAML keys in the
// order of the configuration ("server.grpc_addr", "scoring.secret", ...).
//
// The server reads these once, when it starts:
//
//   - server.*, except server.drain_grace (read when the drain begins):
//     the listeners, TLS credentials and grpc.MaxConcurrentStreams are
//     bound into the gRPC server;
//   - processing.max_message_bytes sets grpc.MaxRecvMsgSize;
//   - scoring.*: the engine is built from its section once (its caches,
//     keys and bloom filters are sized and keyed from it);
//   - admin.token, admin.token_file: the admin API is built with the token;
//   - evidence.include_prompts: the scoring engine keeps prompt text for
//     exports only when built with it;
//   - log.*: the logger is built with them.
//
// Everything else (policies, routes, the other processing settings) is read
// per stream and takes effect for streams that start after the swap. A nil
// prev or c returns nil.
func (c *Config) RestartRequired(prev *Config) []string {
	if c == nil || prev == nil {
		return nil
	}
	var keys []string
	diffKeys("", reflect.ValueOf(prev).Elem(), reflect.ValueOf(c).Elem(), func(key string) {
		if restartOnly(key) {
			keys = append(keys, key)
		}
	})
	return keys
}

// restartOnly reports whether the setting at a dotted key is read only when
// the server starts. New keys under server, scoring and log need a restart
// unless listed here as read at use time.
func restartOnly(key string) bool {
	section, _, _ := strings.Cut(key, ".")
	switch section {
	case "server":
		return key != "server.drain_grace"
	case "scoring", "log":
		return true
	}
	// evidence.include_prompts decides what the engine keeps of each
	// prompt, and the engine is built once.
	return key == "processing.max_message_bytes" || key == "admin.token" || key == "admin.token_file" || key == "evidence.include_prompts"
}

// diffKeys calls changed with the dotted YAML key of every setting that
// differs between a and b (values of the same struct type). Sections are
// walked field by field; anything else (scalars, lists, maps, structs
// without exported fields) is compared as a whole. Unexported fields (the
// resolved tables) are skipped: they are derived from the others. Keys
// follow yaml.v3's naming: the tag's name, else the lowercased field name;
// inline fields belong to the parent.
func diffKeys(prefix string, a, b reflect.Value, changed func(key string)) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		inline := slices.Contains(strings.Split(opts, ","), "inline")
		if inline && isSection(f.Type) {
			diffKeys(prefix, fa, fb, changed)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := prefix + name
		if inline && prefix != "" { // an inline map: keys of the parent
			key = strings.TrimSuffix(prefix, ".")
		}
		if isSection(f.Type) {
			diffKeys(key+".", fa, fb, changed)
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			changed(key)
		}
	}
}

// isSection reports whether t is a struct with settings of its own.
func isSection(t reflect.Type) bool {
	if t.Kind() != reflect.Struct {
		return false
	}
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			return true
		}
	}
	return false
}
