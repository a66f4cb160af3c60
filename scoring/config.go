package scoring

// Config is the scoring section of the distillguard configuration. It is
// decoded strictly from YAML (unknown keys are errors).
type Config struct {
	// Enabled turns scoring on; when false every request is allowed.
	Enabled bool `yaml:"enabled"`
	// Shadow scores and tags every request but never acts on the verdict.
	Shadow bool `yaml:"shadow"`
}

// DefaultConfig is the configuration used when the file has no scoring
// section.
func DefaultConfig() Config { return Config{Enabled: true} }

// Validate reports the first problem in c.
func (c *Config) Validate() error { return nil }
