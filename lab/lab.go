// Package lab measures distillguard's defences with reproducible numbers.
//
// Part one attacks simulated models through the real rewriting code (package
// mutate) under each output and request policy: equation-solving extraction
// of a logistic regression (Tramèr et al. 2016), hidden-dimension recovery
// from logprobs and logit_bias (Carlini et al. 2024; Finlayson et al. 2024),
// and distillation of a teacher into a student. Part two replays labelled
// traffic (package traffic) through a real ext_proc gRPC server, driven as
// Envoy drives it, and reports how soon each family is flagged. Part three
// (economics) runs the attacks end to end against the whole server, under
// attacker strategies that rotate identities, paraphrase, pace themselves
// and age accounts, and reports what each costs against the raw API and
// what the server costs honest users. Run writes one Markdown report with
// SVG figures.
//
// Results depend only on the options: every experiment draws from its own
// seeded generator, nothing depends on map order or on the clock, and
// concurrent parts write to their own slots.
package lab

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/internal/redisproc"
)

// Experiment names accepted by Options.Experiments.
const (
	ExpTramer    = "tramer"
	ExpCarlini   = "carlini"
	ExpDistill   = "distill"
	ExpDetection = "detection"
	// ExpDetectionEval repeats the detection replay for the tuned and
	// held-out traffic variants under several secrets.
	ExpDetectionEval = "detection-eval"
	// ExpEconomics runs the attacks end to end against the whole server
	// under attacker strategies and reports their cost (economics.go).
	ExpEconomics = "economics"
	// ExpDetectionReplicas repeats the detection replay over 1, 3 and 5
	// replicas sharing a real Redis (replicas.go); not run by default.
	ExpDetectionReplicas = "detection-replicas"
)

// AllExperiments lists every experiment in report order.
func AllExperiments() []string {
	return []string{ExpTramer, ExpCarlini, ExpDistill, ExpDetection, ExpDetectionEval, ExpEconomics, ExpDetectionReplicas}
}

// DefaultExperiments are the experiments a run without a list runs: all
// but the replicated comparison, which needs a redis-server.
func DefaultExperiments() []string {
	return []string{ExpTramer, ExpCarlini, ExpDistill, ExpDetection, ExpDetectionEval, ExpEconomics}
}

// Options configure a lab run.
type Options struct {
	Seed uint64
	// Scale sizes the run: 1 is the full lab; smaller values shrink the
	// models, query budgets and generated traffic for quick checks.
	Scale float64
	// CorpusDir holds the prompt corpora for the detection replay.
	CorpusDir string
	// Experiments to run; empty means all.
	Experiments []string
	// Addr is an external ext_proc server ("host:port"); empty starts one
	// in-process.
	Addr string
	// Config is the distillguard configuration (policies for the defence
	// experiments, the in-process server's configuration); nil means the
	// embedded default.
	Config *config.Config
	// Parallel bounds the experiment parts running at once; 0 means
	// GOMAXPROCS.
	Parallel int
	// Progress displays progress; nil displays nothing.
	Progress *Progress
	// Replicas: with one count N > 1, the detection replay runs over N
	// replicas in replicated mode; the detection-replicas experiment
	// compares every count listed (default 1, 3, 5). RedisAddr is the
	// Redis they share (empty: a redis-server started for the run).
	Replicas  []int
	RedisAddr string
}

// Sizes are the parameters derived from Options.Scale.
type Sizes struct {
	Tramer            TramerParams
	Carlini           CarliniParams
	Distill           DistillParams
	Detection         DetectionParams
	DetectionEval     DetectionEvalParams
	DetectionReplicas DetectionReplicasParams
	Economics         EconomicsParams
}

// perturbScales returns the perturbation scales compared.
func perturbScales() []float64 { return []float64{0.1, 0.3, 1} }

// SizesFor returns the experiment parameters for a scale.
func SizesFor(scale float64, policies []Policy) Sizes {
	if scale <= 0 {
		scale = 1
	}
	sc := func(full, least int) int { return max(least, int(float64(full)*scale+0.5)) }
	s := Sizes{
		Tramer: TramerParams{Dim: sc(20, 6), Budgets: []int{1, 2, 4, 16, 64}, HeldOut: sc(20000, 2000), Policies: policies},
		Carlini: CarliniParams{Hidden: sc(64, 12), Vocab: sc(1024, 128), ExtraVectors: sc(16, 6), BisectSteps: 12,
			Policies: policies, LogprobFree: []string{"default allow", "default degrade", "logit_bias dropped"}},
		Distill: DistillParams{Dim: 16, Hidden: 32, Vocab: 32, Budgets: []int{sc(50, 20), sc(200, 50), sc(800, 100)},
			HeldOut: sc(5000, 1000), HonestQueries: sc(1000, 200), HonestTopLogprobs: 5, Epochs: sc(200, 100), Policies: policies},
		Detection:         DetectionParams{Scale: scale},
		DetectionEval:     DetectionEvalParams{Scale: scale, Secrets: 5},
		DetectionReplicas: DetectionReplicasParams{Scale: scale, Variant: 1},
		Economics:         EconomicsParams{Secrets: 3, Setups: DefaultSetups(scale), Honest: HonestParams{Scale: 0.5 * scale}},
	}
	return s
}

// Run runs the selected experiments and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	exps := o.Experiments
	if len(exps) == 0 {
		exps = DefaultExperiments()
	}
	for _, e := range exps {
		if !slices.Contains(AllExperiments(), e) {
			return nil, fmt.Errorf("lab: unknown experiment %q (want %s)", e, strings.Join(AllExperiments(), ", "))
		}
	}
	cfg := o.Config
	if cfg == nil {
		cfg = config.Default()
	}
	if o.Scale <= 0 {
		o.Scale = 1
	}
	policies := Policies(cfg, perturbScales())
	sz := SizesFor(o.Scale, policies)
	sz.Detection.CorpusDir = o.CorpusDir
	sz.Detection.Addr = o.Addr
	sz.Detection.Config = cfg
	sz.DetectionEval.CorpusDir = o.CorpusDir
	sz.DetectionEval.Config = cfg
	sz.Economics.CorpusDir = o.CorpusDir
	sz.Economics.Config = cfg
	sz.DetectionReplicas.CorpusDir = o.CorpusDir
	sz.DetectionReplicas.Config = cfg
	sz.DetectionReplicas.Replicas = o.Replicas
	sz.DetectionReplicas.RedisAddr = o.RedisAddr
	if len(o.Replicas) == 1 && o.Replicas[0] > 1 && slices.Contains(exps, ExpDetection) {
		// The detection replay itself over N replicas.
		sz.Detection.Replicas = o.Replicas[0]
		sz.Detection.RedisAddr = o.RedisAddr
		if sz.Detection.RedisAddr == "" {
			srv, err := redisproc.Start(redisproc.Options{})
			if err != nil {
				return nil, fmt.Errorf("lab: redis-server for the replicated detection replay: %w", err)
			}
			defer srv.Stop()
			sz.Detection.RedisAddr = srv.Addr()
		}
	}

	par := o.Parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	p := &pool{sem: make(chan struct{}, par)}
	rep := &Report{
		Title: "distillguard attack lab",
		Params: [][2]string{
			{"seed", fmt.Sprint(o.Seed)},
			{"scale", fmt.Sprint(o.Scale)},
			{"experiments", strings.Join(ordered(exps), ", ")},
		},
	}
	rep.Sections = append(rep.Sections, policySection(policies))

	// Each selected experiment writes its own slot; the report keeps the
	// fixed order whatever finishes first.
	type slot struct {
		name string
		sec  Section
		err  error
	}
	var slots []*slot
	var wg sync.WaitGroup
	for _, name := range ordered(exps) {
		sl := &slot{name: name}
		slots = append(slots, sl)
		task := o.Progress.Start(name, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch name {
			case ExpTramer:
				sl.err = p.do(ctx, func() (err error) { sl.sec, err = RunTramer(ctx, o.Seed, sz.Tramer, task); return })
			case ExpCarlini:
				sl.sec, sl.err = runCarlini(ctx, p, o.Seed, sz.Carlini, task)
			case ExpDistill:
				sl.err = p.do(ctx, func() (err error) { sl.sec, err = RunDistill(ctx, o.Seed, sz.Distill, task); return })
			case ExpDetection:
				sl.err = p.do(ctx, func() (err error) { sl.sec, err = RunDetection(ctx, o.Seed, sz.Detection, task); return })
			case ExpDetectionEval:
				sl.err = p.do(ctx, func() (err error) { sl.sec, err = RunDetectionEval(ctx, o.Seed, sz.DetectionEval, task); return })
			case ExpEconomics:
				// Fans out on the pool itself: only its leaf runs take slots.
				sl.sec, sl.err = RunEconomics(ctx, p, o.Seed, sz.Economics, task)
			case ExpDetectionReplicas:
				sl.err = p.do(ctx, func() (err error) {
					sl.sec, err = RunDetectionReplicas(ctx, o.Seed, sz.DetectionReplicas, task)
					return
				})
			}
			if sl.err != nil {
				task.Done("failed: " + sl.err.Error())
			} else {
				task.Done(fmt.Sprintf("%d tables", len(sl.sec.Tables)))
			}
		}()
	}
	wg.Wait()
	o.Progress.Close()
	var errs []error
	for _, sl := range slots {
		if sl.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sl.name, sl.err))
			// A partial report says what is missing and why.
			rep.Sections = append(rep.Sections, Section{
				Title: "Experiment " + sl.name + " failed",
				Intro: []string{"Not run to completion: " + sl.err.Error()},
			})
			continue
		}
		rep.Sections = append(rep.Sections, sl.sec)
	}
	return rep, errors.Join(errs...)
}

func ordered(exps []string) []string {
	var out []string
	for _, e := range AllExperiments() {
		if slices.Contains(exps, e) {
			out = append(out, e)
		}
	}
	return out
}

// pool bounds how many CPU-bound parts run at once. Only leaf work takes a
// slot, so parts that fan out never wait on their own children.
type pool struct{ sem chan struct{} }

func (p *pool) do(ctx context.Context, f func() error) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.sem }()
	return f()
}

// all runs every f in its own goroutine under the pool and waits for all of
// them; errors are joined in argument order.
func (p *pool) all(ctx context.Context, fs ...func() error) error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.do(ctx, f)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func policySection(ps []Policy) Section {
	t := Table{Title: "Policies", Header: []string{"policy", "response rewrite", "request rewrite"}}
	for _, p := range ps {
		o, r := p.Describe()
		t.Rows = append(t.Rows, []string{p.Name, o, r})
	}
	return Section{
		Title: "Policies compared",
		Intro: []string{
			"Every defence experiment runs the same attack once per policy. Responses are rewritten by `mutate.Rewriter` " +
				"(non-streamed) or `mutate.SSEStream` (streamed) and requests by `mutate.RewriteRequest`, the code the ext_proc " +
				"server runs. The two `default` rows are the embedded configuration's actions for /v1/chat/completions " +
				"(`config.Default().Resolve`). As in the server, the perturbation is keyed by the session and the request body (`mutate.PerturbSeed`) and " +
				"every response gets a new rewriter starting at token position 0.",
		},
		Tables: []Table{t},
	}
}
