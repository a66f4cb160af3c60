package scoring

import (
	"errors"
	"fmt"
	"time"
)

// Standing is what a new identity must show before it leaves probation.
//
// An identity is in probation until it has sent Requests requests over at
// least Age (request time), all of them clean: its score below the degrade
// threshold and no campaign evidence against it (the campaign, cohort or
// cluster signal at a quarter of its strength: a shared harvesting
// template, a burst of fresh accounts starting the same requests, a link to
// flagged accounts). Any flag or campaign evidence starts the count again,
// for every identity the evidence reaches, including one that had earned
// standing. Decisions carry Probation while it lasts; the ext_proc server
// then applies the route's probation tier (config: policies.<set>.probation)
// instead of allow. Trusted identities (Config.Trusted) never are in
// probation.
//
// Why: the allow tier hands every identity rounded logprobs and
// alternatives, so an attacker who rotates identities faster than scoring
// links them gets allow-tier answers forever. Probation makes each fresh
// identity cost Requests clean requests and Age of waiting before it
// delivers anything but labels; established identities see no change.
//
// Earned standing outlives the session state (Config.SessionTTL): it is
// remembered for Remember after the identity's last request, in a list of
// at most Entries identities, so a user who returns after a long weekend
// does not start over.
type Standing struct {
	// Enabled turns standing on. Off, no decision carries Probation.
	Enabled bool `yaml:"enabled"`
	// Requests is the number of clean requests and Age the clean time an
	// identity needs to earn standing.
	Requests int           `yaml:"requests"`
	Age      time.Duration `yaml:"age"`
	// Remember keeps earned standing after the identity's last request,
	// in a list of at most Entries identities (~100 bytes each).
	Remember time.Duration `yaml:"remember"`
	Entries  int           `yaml:"entries"`
}

// DefaultStanding is the standing of the embedded default configuration.
func DefaultStanding() Standing {
	return Standing{Enabled: true, Requests: 50, Age: 6 * time.Hour, Remember: 30 * 24 * time.Hour, Entries: 1 << 18}
}

func (s Standing) withDefaults() Standing {
	d := DefaultStanding()
	if s.Requests == 0 {
		s.Requests = d.Requests
	}
	if s.Age == 0 {
		s.Age = d.Age
	}
	if s.Remember == 0 {
		s.Remember = d.Remember
	}
	if s.Entries == 0 {
		s.Entries = d.Entries
	}
	return s
}

func (s Standing) validate() error {
	var errs []error
	if s.Requests < 1 || s.Requests > 1<<20 {
		errs = append(errs, fmt.Errorf("requests %d must be in [1, 1048576]", s.Requests))
	}
	if s.Age < 0 {
		errs = append(errs, errors.New("age must not be negative"))
	}
	if s.Remember < time.Hour {
		errs = append(errs, fmt.Errorf("remember %v must be at least 1h", s.Remember))
	}
	if s.Entries < 16 || s.Entries > 1<<26 {
		errs = append(errs, fmt.Errorf("entries %d must be in [16, 67108864]", s.Entries))
	}
	return errors.Join(errs...)
}

// standingEvidence is the strength of the campaign, cohort or cluster
// signal that restarts probation: a quarter of full strength, well below
// what flags a session (the signals' weights put full strength near or
// above the degrade threshold), so campaign evidence that is not yet a
// flag already withholds precision.
const standingEvidence = 0.25

// campaignRefusal is the campaign or cohort strength at which an identity
// in probation is throttled rather than degraded (engine.go): half
// strength, which alone would already degrade it (weights 0.7).
const campaignRefusal = 0.5

// standing folds the request at t into the session's standing and reports
// whether the session is still in probation. score and st are the
// request's evaluation, after the tier was decided. Called with the stripe
// lock held.
//
// State: standFrom and standReq mark the start of the current clean run
// (request time, and the request count then); fStanding is set once it is
// long enough. For a replicated store they merge as a pair ordered by
// standFrom (the later reset wins; equal starts keep the larger count),
// like the quarantine deadline.
//
// It also returns the numeric-record harvest strength (harvestStream), which
// the caller weighs for an identity in probation.
func (e *Engine) standing(s *session, st *strengths, score float64, t int64, tr *trusted) (bool, float64) {
	p := &e.cfg.Standing
	if !p.Enabled || tr != nil {
		return false, 0
	}
	records, softLabels := e.harvestStream(s, t)
	if s.requests == 1 {
		s.standFrom, s.standReq = t, 0
		if e.remembered.until(s.id) > t {
			// Standing earned before the session state was forgotten.
			s.flags |= fStanding
			s.standFrom = t - int64(p.Age)
		}
	}
	evidence := s.tier > Allow || score >= e.cfg.Thresholds.Degrade ||
		st[sigCampaign] >= standingEvidence || st[sigCohort] >= standingEvidence || st[sigCluster] >= standingEvidence ||
		max(records, softLabels) >= standingEvidence
	if evidence {
		if s.has(fStanding) {
			e.m.standingReset()
			e.remembered.remove(s.id)
		}
		s.flags &^= fStanding
		s.standFrom, s.standReq, s.standNoted = t, s.requests, 0
		return true, records
	}
	if !s.has(fStanding) {
		if t-s.standFrom < int64(p.Age) || int(s.requests-s.standReq) < p.Requests {
			return true, records
		}
		s.flags |= fStanding
	}
	// Remember the standing past the session's TTL; refreshed at most once
	// per tenth of Remember, so established traffic rarely takes the
	// list's lock.
	if t-s.standNoted >= int64(p.Remember)/10 {
		s.standNoted = t
		e.remembered.add(s.id, t+int64(p.Remember), t)
	}
	return false, records
}

// harvestStream measures a steady stream of extraction queries behind
// other traffic: numeric records (mostly numbers: the feature vectors of an
// equation-solving or distillation attack on a classifier, Tramèr et al.
// 2016) asked with logprobs or logit_bias, and soft-label logprob requests
// (five or more alternatives), by count and share over the content
// half-life and, for records, over the volume window too, so a burst of
// them after days of chat counts at once. The probe and logprobs signals
// judge shares over the content half-life alone, so an identity that hides
// one harvest request among three chats, or warms up on chat first, stays
// below them; these counts do not, and what they withhold is standing
// (precision), not the answer. Confidence displays asking for two or three
// alternatives (a harvest intensity of 0.04-0.06 per request) on prose stay
// below both.
//
// It returns the two parts apart: numeric records (by count, share and
// recent volume) and soft-label requests.
func (e *Engine) harvestStream(s *session, t int64) (records, softLabels float64) {
	sc := s.c.scalesAt(t, &e.params.half)
	c := s.c.decayed(&sc)
	n, vol := float64(c[cN]), float64(c[vVol])
	var rec, recent, lp float64
	if n > 0 {
		rec = ramp(float64(c[cNumeric]), 3, 8) * ramp(float64(c[cNumeric])/n, 0.05, 0.15)
		lp = ramp(float64(c[cLp]), 2, 6) * ramp(float64(c[cLp])/n, 0.08, 0.2)
	}
	if vol > 0 {
		recent = ramp(float64(c[vNumeric]), 2, 4) * ramp(float64(c[vNumeric])/vol, 0.25, 0.5)
	}
	return max(rec, recent), lp
}

// StandingDetail is the admin view of an identity's standing.
type StandingDetail struct {
	// Earned: out of probation.
	Earned bool `json:"earned"`
	// CleanSince is the start of the current clean run (the first request,
	// or the last flag or campaign evidence), and CleanRequests the
	// requests since.
	CleanSince    time.Time `json:"clean_since"`
	CleanRequests uint32    `json:"clean_requests"`
	// RequiredRequests and RequiredAge are what earning it takes.
	RequiredRequests int    `json:"required_requests"`
	RequiredAge      string `json:"required_age"`
}

// standingDetail reports s's standing; nil when standing is off. Called
// with the stripe lock held.
func (e *Engine) standingDetail(s *session) *StandingDetail {
	p := &e.cfg.Standing
	if !p.Enabled {
		return nil
	}
	return &StandingDetail{
		Earned: s.has(fStanding), CleanSince: time.Unix(0, s.standFrom).UTC(), CleanRequests: s.requests - s.standReq,
		RequiredRequests: p.Requests, RequiredAge: p.Age.String(),
	}
}
