package scoring_test

import (
	"reflect"
	"testing"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/scoring"
)

// TestDefaultYAMLMatchesDefaultConfig keeps config/default.yaml's scoring
// section and scoring.DefaultConfig in step.
func TestDefaultYAMLMatchesDefaultConfig(t *testing.T) {
	got := config.Default().Scoring
	want := scoring.DefaultConfig()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("default.yaml scoring section\n%+v\ndiffers from DefaultConfig()\n%+v", got, want)
	}
}
