package scoring

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// An empty section means all defaults.
	var empty Config
	if err := empty.Validate(); err != nil {
		t.Fatalf("zero config (all defaults): %v", err)
	}
	if got := empty.withDefaults(); got.Thresholds != c.Thresholds || got.MemoryBytes != c.MemoryBytes || len(got.Identity) != 3 {
		t.Fatalf("defaults not applied: %+v", got)
	}
}

func TestConfigValidateRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"unknown identity source", func(c *Config) { c.Identity = []string{"cookie"} }, "identity[0]"},
		{"empty header source", func(c *Config) { c.Identity = []string{"header:"} }, "identity[0]"},
		{"xff without hops", func(c *Config) { c.ClientIPHeader = "x-forwarded-for" }, "trusted_hops"},
		{"hops without header", func(c *Config) { c.TrustedHops = 2 }, "client_ip_header is empty"},
		{"tiny memory", func(c *Config) { c.MemoryBytes = 1000 }, "memory_bytes"},
		{"probation share", func(c *Config) { c.ProbationShare = 1.5 }, "probation_share"},
		{"thresholds out of order", func(c *Config) { c.Thresholds = Thresholds{Degrade: 0.7, Throttle: 0.6, Block: 0.8, Hysteresis: 0.1} }, "thresholds"},
		{"hysteresis too wide", func(c *Config) { c.Thresholds.Hysteresis = 0.5 }, "hysteresis"},
		{"unknown weight", func(c *Config) { c.Weights = map[string]float64{"vibes": 0.5} }, `unknown signal "vibes"`},
		{"weight out of range", func(c *Config) { c.Weights = map[string]float64{"volume": 2} }, "weights.volume"},
		{"subsecond half-life", func(c *Config) { c.ContentHalfLife = time.Millisecond }, "content_half_life"},
		{"campaign levels", func(c *Config) { c.CampaignMinSessions = 1 }, "campaign_min_sessions"},
		{"automation cap", func(c *Config) { c.AutomationCap = 2 }, "automation_cap"},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
		if _, nerr := New(cfg, Options{}); nerr == nil {
			t.Errorf("%s: New accepted an invalid config", c.name)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	doc := `
enabled: true
shadow: true
identity: [authorization, "header:x-api-key", client_ip]
client_ip_header: x-envoy-external-address
trusted_hops: 1
memory_bytes: 67108864
content_half_life: 12h
thresholds: {degrade: 0.35, throttle: 0.65, block: 0.85, hysteresis: 0.1}
quarantine: 30m
weights: {volume: 0.4, campaign: 0.8}
`
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.Shadow || c.ContentHalfLife != 12*time.Hour || c.Quarantine != 30*time.Minute || c.Thresholds.Block != 0.85 || c.Weights["campaign"] != 0.8 {
		t.Fatalf("decoded %+v", c)
	}
	e, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.weights[sigVolume] != 0.4 || e.weights[sigLogitBias] != defaultWeights[sigLogitBias] {
		t.Fatalf("weights %v", e.weights)
	}
	bad := yaml.NewDecoder(strings.NewReader("thresholdz: {}\n"))
	bad.KnownFields(true)
	if err := bad.Decode(&Config{}); err == nil {
		t.Fatal("unknown key accepted")
	}
}
