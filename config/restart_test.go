package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestRestartRequired(t *testing.T) {
	const tlsOn = "server: {tls: {cert_file: a.pem, key_file: a.key}}\n"
	tests := []struct {
		name       string
		prev, next string // YAML layered over the embedded default
		want       []string
	}{
		{name: "unchanged", want: nil},
		{name: "grpc listener", next: `server: {grpc_addr: ":50052"}`, want: []string{"server.grpc_addr"}},
		{name: "admin listener", next: `server: {admin_addr: "127.0.0.1:9999"}`, want: []string{"server.admin_addr"}},
		{name: "TLS on", next: tlsOn, want: []string{"server.tls.cert_file", "server.tls.key_file"}},
		{name: "TLS off", prev: tlsOn, want: []string{"server.tls.cert_file", "server.tls.key_file"}},
		{name: "mTLS on", prev: tlsOn, next: "server: {tls: {cert_file: a.pem, key_file: a.key, client_ca_file: ca.pem}}",
			want: []string{"server.tls.client_ca_file"}},
		{name: "max concurrent streams", next: "server: {max_concurrent_streams: 100}", want: []string{"server.max_concurrent_streams"}},
		{name: "drain grace is read at drain", next: "server: {drain_grace: 3s}", want: nil},
		{name: "max message bytes sets the gRPC limit", next: "processing: {max_message_bytes: 134217728}", want: []string{"processing.max_message_bytes"}},
		{name: "body and memory bounds reload", next: "processing: {max_body_bytes: 8388608, max_held_total_bytes: 1073741824, max_decoded_chunk_bytes: 1048576, max_logit_bias_entries: 10}", want: nil},
		{name: "other processing settings reload", next: "processing: {max_held_bytes: 2048, max_prompt_bytes: 100, mode_override: false, response_body_mode: BUFFERED}", want: nil},
		{name: "scoring secret", next: "scoring: {secret: s3cret}", want: []string{"scoring.secret"}},
		{name: "scoring off", next: "scoring: {enabled: false}", want: []string{"scoring.enabled"}},
		{name: "scoring shadow", next: "scoring: {shadow: true}", want: []string{"scoring.shadow"}},
		{name: "scoring list", next: "scoring: {identity: [client_ip]}", want: []string{"scoring.identity"}},
		{name: "scoring nested", next: "scoring: {thresholds: {block: 0.9}}", want: []string{"scoring.thresholds.block"}},
		{name: "scoring weights", next: "scoring: {weights: {volume: 0.5}}", want: []string{"scoring.weights"}},
		{name: "replicated mode on", next: "scoring: {secret: s3cret, redis: {addrs: [\"redis:6379\"]}}", want: []string{"scoring.secret", "scoring.redis.addrs"}},
		{name: "redis settings", prev: "scoring: {secret: s, redis: {addrs: [\"redis:6379\"]}}",
			next: "scoring: {secret: s, redis: {addrs: [\"redis:6379\"], call_timeout: 40ms, tls: {enabled: true}, breaker: {failures: 9}}}",
			want: []string{"scoring.redis.tls.enabled", "scoring.redis.call_timeout", "scoring.redis.breaker.failures"}},
		{name: "admin token", next: "admin: {token: t0ken}", want: []string{"admin.token"}},
		{name: "log", next: "log: {level: debug, format: text}", want: []string{"log.level", "log.format"}},
		{name: "policies reload", next: "policies: {strict: {allow: {output: {strip_logprobs: true}}}}", want: nil},
		{name: "routes reload", next: "policies: {strict: {}}\nroutes: [{path_prefix: /v1/embeddings, policy: strict}]", want: nil},
		{name: "several, in configuration order", next: "log: {level: warn}\nscoring: {secret: x}\nprocessing: {max_message_bytes: 33554432}\nserver: {grpc_addr: \":1\", drain_grace: 1s}",
			want: []string{"server.grpc_addr", "processing.max_message_bytes", "scoring.secret", "log.level"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev, err := Parse([]byte(tc.prev))
			if err != nil {
				t.Fatal(err)
			}
			next, err := Parse([]byte(tc.next))
			if err != nil {
				t.Fatal(err)
			}
			if got := next.RestartRequired(prev); !slices.Equal(got, tc.want) {
				t.Errorf("RestartRequired = %q, want %q", got, tc.want)
			}
			// Going back is the same change.
			if got := prev.RestartRequired(next); !slices.Equal(got, tc.want) {
				t.Errorf("reverse RestartRequired = %q, want %q", got, tc.want)
			}
		})
	}
	if got := Default().RestartRequired(nil); got != nil {
		t.Errorf("RestartRequired(nil) = %q", got)
	}
}

// restartKeys says, for every setting outside scoring, whether a change
// needs a restart. Every scoring setting does (the engine is built once).
// TestRestartRequiredCoversEveryKey fails on a key missing here, so a new
// setting gets a decision.
func restartKeys() map[string]bool {
	return map[string]bool{
		"server.grpc_addr":              true,
		"server.admin_addr":             true,
		"server.tls.cert_file":          true,
		"server.tls.key_file":           true,
		"server.tls.client_ca_file":     true,
		"server.drain_grace":            false,
		"server.max_concurrent_streams": true,

		"processing.request_body_mode":       false,
		"processing.response_body_mode":      false,
		"processing.mode_override":           false,
		"processing.identity_encoding":       false,
		"processing.max_held_bytes":          false,
		"processing.max_body_bytes":          false,
		"processing.max_message_bytes":       true,
		"processing.max_held_total_bytes":    false,
		"processing.max_decompressed_bytes":  false,
		"processing.max_decoded_chunk_bytes": false,
		"processing.max_logit_bias_entries":  false,
		"processing.max_prompt_bytes":        false,
		"processing.max_clock_skew":          false,
		"processing.formats":                 false, // read per request from the swapped config

		"policies": false,
		"routes":   false,

		"admin.token":      true,
		"admin.token_file": true,
		"log.level":        true,
		"log.format":       true,

		// Key files are read on every load and the keys are used per
		// stream and per export from the configuration then current.
		"watermark.key_file":          false,
		"watermark.verify_key_files":  false,
		"watermark.logprob_amplitude": false,
		"watermark.contexts_file":     false,
		"watermark.log_served":        false,
		"evidence.key_file":           false,
		"evidence.include_prompts":    true, // the engine keeps prompts or not from its start
	}
}

// TestRestartRequiredCoversEveryKey changes every setting of the
// configuration, one at a time, found by walking the Config type, and
// checks that RestartRequired reports exactly that key when (and only
// when) it cannot take effect on SIGHUP.
func TestRestartRequiredCoversEveryKey(t *testing.T) {
	want := restartKeys()
	var seen []string
	var walk func(prefix string, typ reflect.Type, path []int)
	walk = func(prefix string, typ reflect.Type, path []int) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				t.Fatalf("%s%s has no YAML name", prefix, f.Name)
			}
			key, p := prefix+name, append(slices.Clone(path), i)
			if f.Type.Kind() == reflect.Struct {
				walk(key+".", f.Type, p)
				continue
			}
			seen = append(seen, key)
			restart, listed := want[key]
			if strings.HasPrefix(key, "scoring.") {
				restart, listed = true, true
			}
			if !listed {
				t.Errorf("%s is not in restartKeys: decide whether a change needs a restart (config.restartOnly) and list it", key)
				continue
			}
			prev, next := Default(), Default()
			change(t, key, reflect.ValueOf(next).Elem().FieldByIndex(p))
			got := next.RestartRequired(prev)
			switch {
			case restart && !slices.Equal(got, []string{key}):
				t.Errorf("changing %s: RestartRequired = %q, want [%s]", key, got, key)
			case !restart && len(got) != 0:
				t.Errorf("changing %s (reloadable): RestartRequired = %q, want none", key, got)
			}
		}
	}
	walk("", reflect.TypeFor[Config](), nil)
	for key := range want {
		if !slices.Contains(seen, key) {
			t.Errorf("restartKeys lists %s, which is not a setting", key)
		}
	}
	if !slices.Contains(seen, "scoring.secret") || len(seen) < 40 {
		t.Errorf("walked %d settings: %q", len(seen), seen)
	}
}

// change sets v to a different value of its type.
func change(t *testing.T, key string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(v.Float() + 0.25)
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for it := v.MapRange(); it.Next(); {
			m.SetMapIndex(it.Key(), it.Value())
		}
		m.SetMapIndex(reflect.ValueOf("restart-test").Convert(v.Type().Key()), reflect.Zero(v.Type().Elem()))
		v.Set(m)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		} else {
			v.Set(reflect.Zero(v.Type()))
		}
	default:
		t.Fatalf("%s: no way to change a %s", key, v.Type())
	}
}
