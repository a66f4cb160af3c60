package scoring

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// RedisConfig is scoring.redis: where replicated mode keeps the state that
// several distillguard replicas share. With no address the engine keeps all
// of its state in process (the default, which `make run` uses).
//
// Addrs is one host:port for a standalone server, or several seed nodes of
// a Redis Cluster; which of the two it is is discovered (the client asks
// the server for its cluster topology and falls back to standalone).
// Valkey speaks the same protocol.
type RedisConfig struct {
	Addrs    []string `yaml:"addrs"`
	Username string   `yaml:"username"`
	// Password, or PasswordFile: a file holding it (a mounted Kubernetes
	// Secret), read at start; surrounding whitespace is dropped. Set one.
	Password     string   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	DB           int      `yaml:"db"` // standalone only: Redis Cluster has database 0 alone
	TLS          RedisTLS `yaml:"tls"`
	// KeyPrefix starts every key distillguard writes, so several
	// deployments can share one Redis.
	KeyPrefix string `yaml:"key_prefix"`
	// CallTimeout bounds every call on the request path (the session read)
	// and every flush command; it must stay well under Envoy's ext_proc
	// message_timeout (envoy/envoy.yaml uses 0.5 s) so a slow Redis never
	// stalls a request: past it the request is scored on local state.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// DialTimeout bounds connecting; FlushInterval is how often the
	// cross-account deltas are pushed and the merged view pulled (session
	// writes go out as soon as the previous batch is done and WriteDelay
	// has passed since it started).
	DialTimeout   time.Duration `yaml:"dial_timeout"`
	FlushInterval time.Duration `yaml:"flush_interval"`
	// WriteDelay is the least time between the starts of two session
	// write batches: a write queued sooner after the last batch waits out
	// the rest of it, so that the writes of a busy replica go out
	// together, one pipelined round trip (and one wake-up of Redis and of
	// the flusher) for many requests instead of one each, the way
	// envoyproxy/ratelimit batches its increments. An idle replica still
	// writes at once. 0 writes each batch as soon as the previous one is
	// done. Not a default applied to a zero value (0 is a setting): it
	// comes from DefaultConfig and config/default.yaml.
	WriteDelay time.Duration `yaml:"write_delay"`
	// MaxPending bounds the sessions whose changes wait to be written
	// (while Redis is slow or down); past it the oldest wait for their next
	// request. StreamLength is how many delta batches the shared log keeps
	// (approximately, MAXLEN ~); a replica that falls further behind skips
	// the oldest.
	MaxPending   int `yaml:"max_pending"`
	StreamLength int `yaml:"stream_length"`
	// SnapshotInterval: how often one replica writes the merged
	// cross-account sketches, from which a replica that starts (a rollout,
	// a new pod) loads the history before following the log.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	Breaker          RedisBreaker  `yaml:"breaker"`

	passwordFromFile string // what ResolveFiles read
}

// RedisTLS configures TLS to Redis. CAFile verifies the server (system
// roots when empty); CertFile and KeyFile present a client certificate.
type RedisTLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// RedisBreaker is the circuit breaker in front of Redis: after Failures
// consecutive failed calls it opens for OpenFor, during which no call is
// made and scoring uses local state alone; then HalfOpenProbes calls test
// whether Redis is back.
type RedisBreaker struct {
	Failures       int           `yaml:"failures"`
	OpenFor        time.Duration `yaml:"open_for"`
	HalfOpenProbes int           `yaml:"half_open_probes"`
}

// Enabled reports whether replicated mode is configured.
func (r *RedisConfig) Enabled() bool { return len(r.Addrs) > 0 }

func defaultRedis() RedisConfig {
	return RedisConfig{
		Addrs:            []string{},
		KeyPrefix:        "dg:",
		CallTimeout:      30 * time.Millisecond,
		DialTimeout:      time.Second,
		FlushInterval:    20 * time.Millisecond,
		WriteDelay:       2 * time.Millisecond,
		MaxPending:       100000,
		StreamLength:     4096,
		SnapshotInterval: 30 * time.Second,
		Breaker:          RedisBreaker{Failures: 5, OpenFor: 2 * time.Second, HalfOpenProbes: 3},
	}
}

func (r RedisConfig) withDefaults() RedisConfig {
	d := defaultRedis()
	if r.Addrs == nil {
		r.Addrs = d.Addrs
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = d.KeyPrefix
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setI := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setD(&r.CallTimeout, d.CallTimeout)
	setD(&r.DialTimeout, d.DialTimeout)
	setD(&r.FlushInterval, d.FlushInterval)
	setD(&r.SnapshotInterval, d.SnapshotInterval)
	setI(&r.MaxPending, d.MaxPending)
	setI(&r.StreamLength, d.StreamLength)
	setI(&r.Breaker.Failures, d.Breaker.Failures)
	setD(&r.Breaker.OpenFor, d.Breaker.OpenFor)
	setI(&r.Breaker.HalfOpenProbes, d.Breaker.HalfOpenProbes)
	return r
}

// validate reports every problem of the redis section (defaults applied).
// secretSet says whether scoring.secret or secret_file is set.
func (r *RedisConfig) validate(secretSet bool, bad func(format string, a ...any)) {
	if !r.Enabled() {
		return
	}
	if !secretSet {
		bad("redis: replicated mode needs scoring.secret (or scoring.secret_file): every replica must derive the same session ids and hash keys from it, and a random per-process secret would make each replica see different sessions")
	}
	for i, a := range r.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			bad("redis.addrs[%d]: %q is not host:port", i, a)
			continue
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			bad("redis.addrs[%d]: %q: port must be in [1, 65535]", i, a)
		}
	}
	if r.Password != "" && r.PasswordFile != "" && r.Password != r.passwordFromFile {
		bad("redis: set password or password_file, not both")
	}
	if r.Username != "" && r.Password == "" && r.PasswordFile == "" {
		bad("redis.username needs password or password_file")
	}
	if r.DB < 0 || r.DB > 15 {
		bad("redis.db %d must be in [0, 15]", r.DB)
	}
	if r.DB != 0 && len(r.Addrs) > 1 {
		bad("redis.db is for a standalone server; several addrs mean a Redis Cluster, which has database 0 only")
	}
	t := r.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		bad("redis.tls: settings are given but tls.enabled is false")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("redis.tls: cert_file and key_file go together")
	}
	if strings.ContainsAny(r.KeyPrefix, "{} \t\r\n") {
		bad("redis.key_prefix %q must not contain braces (hash tags) or whitespace", r.KeyPrefix)
	}
	if len(r.KeyPrefix) > 64 {
		bad("redis.key_prefix is longer than 64 bytes")
	}
	if r.CallTimeout < time.Millisecond || r.CallTimeout > 400*time.Millisecond {
		bad("redis.call_timeout %v must be in [1ms, 400ms]: it must stay well under Envoy's ext_proc message_timeout", r.CallTimeout)
	}
	if r.DialTimeout < 10*time.Millisecond || r.DialTimeout > time.Minute {
		bad("redis.dial_timeout %v must be in [10ms, 1m]", r.DialTimeout)
	}
	if r.FlushInterval < time.Millisecond || r.FlushInterval > 10*time.Second {
		bad("redis.flush_interval %v must be in [1ms, 10s]", r.FlushInterval)
	}
	if r.WriteDelay < 0 || r.WriteDelay > r.FlushInterval {
		bad("redis.write_delay %v must be in [0, flush_interval]", r.WriteDelay)
	}
	if r.SnapshotInterval < time.Second {
		bad("redis.snapshot_interval %v must be at least 1s", r.SnapshotInterval)
	}
	if r.MaxPending < 16 || r.MaxPending > 1<<24 {
		bad("redis.max_pending %d must be in [16, 16777216]", r.MaxPending)
	}
	if r.StreamLength < 100 || r.StreamLength > 1<<22 {
		bad("redis.stream_length %d must be in [100, 4194304]", r.StreamLength)
	}
	b := r.Breaker
	if b.Failures < 1 || b.Failures > 1000 {
		bad("redis.breaker.failures %d must be in [1, 1000]", b.Failures)
	}
	if b.OpenFor < 10*time.Millisecond || b.OpenFor > 10*time.Minute {
		bad("redis.breaker.open_for %v must be in [10ms, 10m]", b.OpenFor)
	}
	if b.HalfOpenProbes < 1 || b.HalfOpenProbes > 1000 {
		bad("redis.breaker.half_open_probes %d must be in [1, 1000]", b.HalfOpenProbes)
	}
}

// tlsConfig builds the client TLS configuration, reading the files.
func (r *RedisConfig) tlsConfig() (*tls.Config, error) {
	t := r.TLS
	if !t.Enabled {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // off unless configured
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file %s: no PEM certificates", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// readSecretFile reads a secret kept in a file (a mounted Kubernetes
// Secret): surrounding whitespace, such as the trailing newline editors
// and `kubectl create secret --from-file` keep, is not part of it.
func readSecretFile(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", key, path)
	}
	return s, nil
}

// ResolveFiles reads the secrets kept in files (secret_file,
// redis.password_file) into Secret and Redis.Password. config.Load calls
// it; scoring.New calls it for a Config built in code. Setting both a
// value and its file is an error.
func (c *Config) ResolveFiles() error {
	var errs []error
	if c.SecretFile != "" {
		if c.Secret != "" && c.Secret != c.secretFromFile {
			errs = append(errs, errors.New("set secret or secret_file, not both"))
		} else if s, err := readSecretFile("secret_file", c.SecretFile); err != nil {
			errs = append(errs, err)
		} else {
			c.Secret, c.secretFromFile = s, s
		}
	}
	r := &c.Redis
	if r.PasswordFile != "" {
		if r.Password != "" && r.Password != r.passwordFromFile {
			errs = append(errs, errors.New("redis: set password or password_file, not both"))
		} else if s, err := readSecretFile("redis.password_file", r.PasswordFile); err != nil {
			errs = append(errs, err)
		} else {
			r.Password, r.passwordFromFile = s, s
		}
	}
	return errors.Join(errs...)
}
