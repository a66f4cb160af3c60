package scoring

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRedisConfigValidate(t *testing.T) {
	withRedis := func(edit func(*RedisConfig)) func(*Config) {
		return func(c *Config) {
			c.Secret = "s3cret-s3cret"
			c.Redis.Addrs = []string{"127.0.0.1:6379"}
			if edit != nil {
				edit(&c.Redis)
			}
		}
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string // "" : valid
	}{
		{"in-memory default", func(*Config) {}, ""},
		{"standalone", withRedis(nil), ""},
		{"cluster seeds", withRedis(func(r *RedisConfig) { r.Addrs = []string{"a:7000", "b:7001", "c:7002"} }), ""},
		{"no secret", func(c *Config) { c.Redis.Addrs = []string{"127.0.0.1:6379"} }, "needs scoring.secret"},
		{"secret file counts", func(c *Config) { c.Redis.Addrs = []string{"127.0.0.1:6379"}; c.SecretFile = "/run/secret" }, ""},
		{"not host:port", withRedis(func(r *RedisConfig) { r.Addrs = []string{"redis"} }), "not host:port"},
		{"bad port", withRedis(func(r *RedisConfig) { r.Addrs = []string{"redis:0"} }), "port must be"},
		{"password twice", withRedis(func(r *RedisConfig) { r.Password, r.PasswordFile = "p", "/f" }), "not both"},
		{"user without password", withRedis(func(r *RedisConfig) { r.Username = "dg" }), "needs password"},
		{"db with cluster", withRedis(func(r *RedisConfig) { r.Addrs = []string{"a:1", "b:2"}; r.DB = 2 }), "database 0 only"},
		{"db range", withRedis(func(r *RedisConfig) { r.DB = 16 }), "redis.db"},
		{"tls settings without tls", withRedis(func(r *RedisConfig) { r.TLS.CAFile = "ca.pem" }), "tls.enabled is false"},
		{"cert without key", withRedis(func(r *RedisConfig) { r.TLS = RedisTLS{Enabled: true, CertFile: "c.pem"} }), "go together"},
		{"hash tag in prefix", withRedis(func(r *RedisConfig) { r.KeyPrefix = "dg{x}" }), "braces"},
		{"deadline too long", withRedis(func(r *RedisConfig) { r.CallTimeout = time.Second }), "call_timeout"},
		{"flush too slow", withRedis(func(r *RedisConfig) { r.FlushInterval = time.Minute }), "flush_interval"},
		{"write delay past flush", withRedis(func(r *RedisConfig) { r.WriteDelay = time.Second }), "write_delay"},
		{"negative write delay", withRedis(func(r *RedisConfig) { r.WriteDelay = -time.Millisecond }), "write_delay"},
		{"no write delay", withRedis(func(r *RedisConfig) { r.WriteDelay = 0 }), ""},
		{"breaker", withRedis(func(r *RedisConfig) { r.Breaker.Failures = -1 }), "breaker.failures"},
		{"secret and file", func(c *Config) { c.Secret, c.SecretFile = "a", "/f" }, "secret or secret_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestResolveFiles(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "secret")
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(sec, []byte("  from-a-kubernetes-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.SecretFile = sec
	c.Redis.Addrs = []string{"127.0.0.1:6379"}
	c.Redis.PasswordFile = pw
	if err := c.ResolveFiles(); err != nil {
		t.Fatal(err)
	}
	if c.Secret != "from-a-kubernetes-secret" || c.Redis.Password != "hunter2" {
		t.Fatalf("read %q and %q", c.Secret, c.Redis.Password)
	}
	// Resolved twice (config.Load, then scoring.New): still valid.
	if err := c.ResolveFiles(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// Two engines reading the same file derive the same session ids.
	a, b := newTestEngine(t, func(x *Config) { x.Secret, x.SecretFile = "", sec }), newTestEngine(t, func(x *Config) { x.Secret, x.SecretFile = "", sec })
	r := newClient("sk-file", "192.0.2.1:1").req(t0, "hello")
	if a.Score(r).Session != b.Score(r).Session {
		t.Error("same secret file, different session ids")
	}
	for name, edit := range map[string]func(*Config){
		"missing": func(x *Config) { x.SecretFile = filepath.Join(dir, "nope") },
		"empty": func(x *Config) {
			p := filepath.Join(dir, "empty")
			_ = os.WriteFile(p, []byte("\n"), 0o600)
			x.SecretFile = p
		},
		"both": func(x *Config) { x.Secret, x.SecretFile = "inline", sec },
	} {
		x := DefaultConfig()
		edit(&x)
		if err := x.ResolveFiles(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
