package scoring

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Config is the scoring section of the distillguard configuration. It is
// decoded strictly from YAML (unknown keys are errors). Zero values of the
// numeric fields mean "use the default" (see DefaultConfig), so a file may
// set only what it changes.
type Config struct {
	// Enabled turns scoring on; when false every request is allowed.
	Enabled bool `yaml:"enabled"`
	// Shadow scores and tags every request but never acts on the verdict.
	Shadow bool `yaml:"shadow"`

	// Secret keys the HMAC-SHA256 that turns credentials and addresses into
	// session ids. Empty means a random secret per process: ids then change
	// on restart (state is in memory anyway), and no two processes share
	// ids. Set it (32+ random bytes) when ids must match across replicas or
	// in logs across restarts. The raw credential is never stored or logged.
	// Every keyed hash (session ids, token and shingle sampling, template,
	// cohort and link hashes) derives from it, so replicas and restarts
	// with the same secret see the same keys; replicated mode (Redis)
	// requires it.
	Secret string `yaml:"secret"`
	// SecretFile reads Secret from a file instead (a mounted Kubernetes
	// Secret; surrounding whitespace is dropped). Set one of the two.
	SecretFile string `yaml:"secret_file"`
	// Redis, when redis.addrs is set, is replicated mode: sessions and the
	// cross-account aggregates are shared between replicas through Redis
	// (see replica.go).
	Redis RedisConfig `yaml:"redis"`

	// Identity lists where the session key comes from, first non-empty wins:
	// "authorization" (the bearer token of the Authorization header),
	// "header:<name>" (the raw value of a request header, e.g.
	// "header:x-api-key"), "client_ip" (the client address, see
	// ClientIPHeader).
	Identity []string `yaml:"identity"`
	// ClientIPHeader names a header carrying the client address (e.g.
	// x-forwarded-for). Leave it empty unless a proxy you control sets it:
	// clients can forge it. When empty the client address is Envoy's
	// source.address, which already honours Envoy's xff_num_trusted_hops
	// (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-for).
	ClientIPHeader string `yaml:"client_ip_header"`
	// TrustedHops is how many trusted proxies appended to ClientIPHeader:
	// the client address is the TrustedHops-th entry from the right. It
	// must be >= 1 when ClientIPHeader is set.
	TrustedHops int `yaml:"trusted_hops"`

	// MemoryBytes bounds per-session state (ristretto cost = bytes held).
	MemoryBytes int64 `yaml:"memory_bytes"`
	// ProbationShare is the part of MemoryBytes given to new sessions; a
	// session moves to the main tier after PromoteAfter requests or once
	// flagged, so a flood of one-shot keys churns only the probation tier.
	ProbationShare float64 `yaml:"probation_share"`
	PromoteAfter   int     `yaml:"promote_after"`
	// PromoteRate bounds promotions into the main tier (per second of
	// request time, with a burst of ten seconds' worth), so a flood of keys
	// that each come back a few times still cannot churn established
	// sessions out faster than this.
	PromoteRate float64 `yaml:"promote_rate"`
	// SessionTTL forgets a session idle for this long (request time).
	SessionTTL time.Duration `yaml:"session_ttl"`
	// MaxPromptBytes caps the prompt text examined (on top of the server's
	// processing.max_prompt_bytes).
	MaxPromptBytes int `yaml:"max_prompt_bytes"`

	// ContentHalfLife is the decay half-life of the per-session content
	// shares (single-turn, duplicates, reasoning demands, templates,
	// logprob use) and of campaign clusters.
	ContentHalfLife time.Duration `yaml:"content_half_life"`
	// VolumeHalfLife and BurstHalfLife are the windows of the request and
	// byte rates.
	VolumeHalfLife time.Duration `yaml:"volume_half_life"`
	BurstHalfLife  time.Duration `yaml:"burst_half_life"`

	// CampaignWindow sets the memory of the shared template sketch: its
	// counts decay with a half-life of half the window. A template element
	// (a sampled shingle of a user turn, or a system prompt with its tools)
	// is a campaign's once CampaignMinSessions distinct sessions sent it
	// and hardly any of them went on to converse. CampaignCapacity is the
	// number of distinct elements the sketch holds (its width); past it new
	// elements are refused rather than counted wrongly. CampaignSlices is
	// accepted for compatibility with older files and no longer used: the
	// sketch decays continuously instead of rotating slices.
	CampaignWindow      time.Duration `yaml:"campaign_window"`
	CampaignSlices      int           `yaml:"campaign_slices"`
	CampaignMinSessions int           `yaml:"campaign_min_sessions"`
	CampaignCapacity    int           `yaml:"campaign_capacity"`
	// MaxClusters bounds the link table (IP blocks, user-agents, request
	// fingerprints) used to spread verdicts across linked accounts.
	MaxClusters int `yaml:"max_clusters"`
	// IndexSize bounds the riskiest-sessions index the admin API lists;
	// QuarantineEntries bounds the blocked-session list that survives
	// eviction from the session cache.
	IndexSize         int `yaml:"index_size"`
	QuarantineEntries int `yaml:"quarantine_entries"`

	// Thresholds map the score onto verdicts.
	Thresholds Thresholds `yaml:"thresholds"`
	// Quarantine keeps a blocked session blocked this long whatever its
	// score does.
	Quarantine time.Duration `yaml:"quarantine"`
	// AutomationCap bounds what automation evidence alone (volume,
	// regularity, single-turn, near-duplicates, novelty) can add to the
	// score. Applications, agents, retrieval pipelines, batch jobs and
	// evaluation harnesses are automated without being extraction: the
	// default sits below the degrade threshold, so automation alone never
	// flags and only adds to harvesting evidence.
	AutomationCap float64 `yaml:"automation_cap"`
	// Weights overrides per-signal weights in [0,1] by signal name.
	Weights map[string]float64 `yaml:"weights"`

	// Trusted lists identities or tenants with their own thresholds or
	// allow-always (see Trusted).
	Trusted []Trusted `yaml:"trusted"`
	// JWTPayloadHeader names the header in which Envoy's jwt_authn filter
	// forwards the verified JWT payload (its forward_payload_header), for
	// the claim matchers of Trusted.
	JWTPayloadHeader string `yaml:"jwt_payload_header"`

	// Standing is what a new identity must show before it leaves probation
	// (see Standing).
	Standing Standing `yaml:"standing"`
	// what ResolveFiles read, so a resolved Config validates again
	secretFromFile string
}

// Thresholds are the score levels of the verdict tiers. A session moves up
// as soon as its score reaches a tier's level and moves down only once the
// score is Hysteresis below it.
type Thresholds struct {
	Degrade    float64 `yaml:"degrade"`
	Throttle   float64 `yaml:"throttle"`
	Block      float64 `yaml:"block"`
	Hysteresis float64 `yaml:"hysteresis"`
}

// DefaultConfig is the configuration used when the file has no scoring
// section. The thresholds and weights were chosen by replaying the
// internal/traffic generator through the engine (see eval_test.go).
func DefaultConfig() Config {
	return Config{
		Enabled:             true,
		Identity:            []string{"authorization", "header:x-api-key", "client_ip"},
		MemoryBytes:         256 << 20,
		ProbationShare:      0.125,
		PromoteAfter:        3,
		PromoteRate:         200,
		SessionTTL:          48 * time.Hour,
		MaxPromptBytes:      8192,
		ContentHalfLife:     24 * time.Hour,
		VolumeHalfLife:      time.Hour,
		BurstHalfLife:       10 * time.Minute,
		CampaignWindow:      24 * time.Hour,
		CampaignSlices:      6,
		CampaignMinSessions: 5,
		CampaignCapacity:    1 << 17,
		MaxClusters:         1 << 16,
		IndexSize:           1024,
		QuarantineEntries:   1 << 16,
		Thresholds:          Thresholds{Degrade: 0.3, Throttle: 0.6, Block: 0.8, Hysteresis: 0.1},
		Quarantine:          time.Hour,
		AutomationCap:       0.2,
		Trusted:             []Trusted{},
		Standing:            DefaultStanding(),
		Redis:               defaultRedis(),
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if len(c.Identity) == 0 {
		c.Identity = d.Identity
	}
	setI64 := func(p *int64, v int64) {
		if *p == 0 {
			*p = v
		}
	}
	setI := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setF := func(p *float64, v float64) {
		if *p == 0 {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setI64(&c.MemoryBytes, d.MemoryBytes)
	setF(&c.ProbationShare, d.ProbationShare)
	setI(&c.PromoteAfter, d.PromoteAfter)
	setF(&c.PromoteRate, d.PromoteRate)
	setD(&c.SessionTTL, d.SessionTTL)
	setI(&c.MaxPromptBytes, d.MaxPromptBytes)
	setD(&c.ContentHalfLife, d.ContentHalfLife)
	setD(&c.VolumeHalfLife, d.VolumeHalfLife)
	setD(&c.BurstHalfLife, d.BurstHalfLife)
	setD(&c.CampaignWindow, d.CampaignWindow)
	setI(&c.CampaignSlices, d.CampaignSlices)
	setI(&c.CampaignMinSessions, d.CampaignMinSessions)
	setI(&c.CampaignCapacity, d.CampaignCapacity)
	setI(&c.MaxClusters, d.MaxClusters)
	setI(&c.IndexSize, d.IndexSize)
	setI(&c.QuarantineEntries, d.QuarantineEntries)
	if c.Thresholds == (Thresholds{}) {
		c.Thresholds = d.Thresholds
	}
	setD(&c.Quarantine, d.Quarantine)
	setF(&c.AutomationCap, d.AutomationCap)
	c.Standing = c.Standing.withDefaults()
	c.Redis = c.Redis.withDefaults()
	return c
}

// Validate reports every problem in c (after defaults are applied).
func (c *Config) Validate() error {
	v := c.withDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for i, src := range v.Identity {
		if _, err := parseSource(src); err != nil {
			bad("identity[%d]: %v", i, err)
		}
	}
	if v.ClientIPHeader != "" && v.TrustedHops < 1 {
		bad("trusted_hops must be >= 1 when client_ip_header is set (how many trusted proxies append to %s)", v.ClientIPHeader)
	}
	if v.ClientIPHeader == "" && v.TrustedHops != 0 {
		bad("trusted_hops is set but client_ip_header is empty")
	}
	if v.TrustedHops < 0 {
		bad("trusted_hops must not be negative")
	}
	if v.MemoryBytes < 1<<20 {
		bad("memory_bytes %d is below 1 MiB", v.MemoryBytes)
	}
	if v.ProbationShare <= 0 || v.ProbationShare >= 1 {
		bad("probation_share %g must be in (0, 1)", v.ProbationShare)
	}
	if v.PromoteAfter < 1 {
		bad("promote_after must be >= 1")
	}
	if v.PromoteRate <= 0 {
		bad("promote_rate must be positive")
	}
	for name, d := range map[string]time.Duration{
		"session_ttl": v.SessionTTL, "content_half_life": v.ContentHalfLife, "volume_half_life": v.VolumeHalfLife,
		"burst_half_life": v.BurstHalfLife, "campaign_window": v.CampaignWindow, "quarantine": v.Quarantine,
	} {
		if d < time.Second {
			bad("%s %v must be at least 1s", name, d)
		}
	}
	if v.MaxPromptBytes < 64 {
		bad("max_prompt_bytes %d is below 64", v.MaxPromptBytes)
	}
	if v.CampaignSlices < 1 || v.CampaignSlices > 64 {
		bad("campaign_slices %d must be in [1, 64]", v.CampaignSlices)
	}
	if v.CampaignMinSessions < 2 || v.CampaignMinSessions > 64 {
		bad("campaign_min_sessions %d must be in [2, 64]", v.CampaignMinSessions)
	}
	if v.CampaignCapacity < 1024 || v.CampaignCapacity > 1<<26 {
		bad("campaign_capacity %d must be in [1024, 67108864]", v.CampaignCapacity)
	}
	if v.MaxClusters < 16 || v.IndexSize < 1 || v.QuarantineEntries < 16 {
		bad("max_clusters (>= 16), index_size (>= 1) and quarantine_entries (>= 16) must be positive")
	}
	if err := validThresholds(v.Thresholds); err != nil {
		bad("%v", err)
	}
	if _, err := newTrustTable(v.Trusted, v.JWTPayloadHeader); err != nil {
		bad("%v", err)
	}
	if err := v.Standing.validate(); err != nil {
		bad("standing: %v", err)
	}
	if v.AutomationCap <= 0 || v.AutomationCap > 1 {
		bad("automation_cap %g must be in (0, 1]", v.AutomationCap)
	}
	if v.SecretFile != "" && v.Secret != "" && v.Secret != v.secretFromFile {
		bad("set secret or secret_file, not both")
	}
	v.Redis.validate(v.Secret != "" || v.SecretFile != "", func(format string, a ...any) { bad(format, a...) })
	names := make([]string, 0, len(v.Weights))
	for n := range v.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if signalIndex(n) < 0 {
			bad("weights: unknown signal %q (known: %s)", n, strings.Join(SignalNames(), ", "))
		} else if w := v.Weights[n]; w < 0 || w > 1 {
			bad("weights.%s %g must be in [0, 1]", n, w)
		}
	}
	return errors.Join(errs...)
}
