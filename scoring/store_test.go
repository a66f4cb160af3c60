package scoring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func newTestTier(maxCost int64) *sampledTier {
	return newSampledTier(maxCost, keyFor("tier"), 3, 4)
}

// checkTier verifies the tier's index and cost bookkeeping.
func checkTier(t *testing.T, tr *sampledTier) {
	t.Helper()
	var used int64
	for i, e := range tr.ents {
		if j, ok := tr.idx[e.key]; !ok || int(j) != i {
			t.Fatalf("entry %d (%s) indexed at %d (present %v)", i, e.key, j, ok)
		}
		used += e.cost
	}
	if len(tr.idx) != len(tr.ents) || used != tr.used {
		t.Fatalf("index holds %d keys for %d entries; used %d, entries cost %d", len(tr.idx), len(tr.ents), tr.used, used)
	}
}

// TestSampledTierCostBound: inserts never take the tier past its budget,
// and the bookkeeping stays consistent through evictions and deletes.
func TestSampledTierCostBound(t *testing.T) {
	const maxCost = 64 << 10
	tr := newTestTier(maxCost)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 2000; i++ {
		key := fmt.Sprintf("k%d", rng.IntN(400))
		if _, ok := tr.Get(key); !ok {
			if !tr.SetWithTTL(key, &session{}, int64(200+rng.IntN(1800)), 0) {
				t.Fatalf("insert %d refused", i)
			}
		}
		if i%7 == 0 {
			tr.Del(fmt.Sprintf("k%d", rng.IntN(400)))
		}
		if tr.used > maxCost {
			t.Fatalf("after op %d the tier holds %d bytes, budget %d", i, tr.used, maxCost)
		}
		checkTier(t, tr)
	}
	if tr.evicted == 0 {
		t.Fatal("no eviction: the test does not exercise the bound")
	}
	if tr.SetWithTTL("huge", &session{}, maxCost, 0) {
		t.Error("an entry larger than the budget was accepted")
	}
}

// TestSampledTierAdmission: a newcomer requested less often than every
// resident is refused (TinyLFU), one requested more often gets in, and an
// update changes the cost in place.
func TestSampledTierAdmission(t *testing.T) {
	const cost = 1000
	per := cost + tierEntryOverhead
	tr := newTestTier(8 * per)
	var residents []string
	for i := 0; i < 8; i++ {
		k := fmt.Sprintf("resident%d", i)
		residents = append(residents, k)
		tr.SetWithTTL(k, &session{}, cost, 0)
		for j := 0; j < 5; j++ {
			if _, ok := tr.Get(k); !ok {
				t.Fatalf("%s not stored", k)
			}
		}
	}
	tr.Get("cold") // one miss, as the engine's lookup does
	tr.SetWithTTL("cold", &session{}, cost, 0)
	if _, ok := tr.Get("cold"); ok || tr.rejected != 1 {
		t.Fatalf("cold newcomer admitted (rejected=%d)", tr.rejected)
	}
	for _, k := range residents {
		if _, ok := tr.idx[k]; !ok {
			t.Fatalf("resident %s evicted by a refused newcomer", k)
		}
	}
	for j := 0; j < 10; j++ {
		tr.Get("hot")
	}
	tr.SetWithTTL("hot", &session{}, cost, 0)
	if _, ok := tr.Get("hot"); !ok || tr.evicted != 1 || len(tr.ents) != 8 {
		t.Fatalf("hot newcomer: stored=%v evicted=%d entries=%d, want stored, 1, 8", ok, tr.evicted, len(tr.ents))
	}
	s := &session{requests: 7}
	before := tr.used
	tr.SetWithTTL("hot", s, cost+100, 0)
	if got, _ := tr.Get("hot"); got != s || tr.used != before+100 {
		t.Errorf("update: got %p (want %p), used %d (want %d)", got, s, tr.used, before+100)
	}
	checkTier(t, tr)
}

// TestSampledTierReplays: the same seeds and operations leave the same
// residents in the same order.
func TestSampledTierReplays(t *testing.T) {
	play := func() []string {
		tr := newTestTier(32 << 10)
		rng := rand.New(rand.NewPCG(7, 8))
		for i := 0; i < 3000; i++ {
			key := fmt.Sprintf("k%d", int(rng.ExpFloat64()*80))
			if _, ok := tr.Get(key); !ok {
				tr.SetWithTTL(key, &session{}, int64(300+rng.IntN(700)), 0)
			}
		}
		var keys []string
		for _, e := range tr.ents {
			keys = append(keys, e.key)
		}
		return keys
	}
	a, b := play(), play()
	if !slices.Equal(a, b) {
		t.Fatalf("residents differ:\n%v\n%v", a, b)
	}
}

// TestClusterTableEviction: the table stays bounded, its key list matches
// the map, and a heavily used cluster outlives one-off ones.
func TestClusterTableEviction(t *testing.T) {
	ct := newClusterTable(16, int64(1e12), 9, 10)
	heavy := ct.get(1, linkIP, "heavy", 0)
	heavy.sessions, heavy.flagged = 50, 10
	for k := uint64(2); k < 200; k++ {
		ct.get(k, linkClient, "x", int64(k))
		if len(ct.m) > 16 || len(ct.keys) != len(ct.m) {
			t.Fatalf("after key %d: %d clusters, %d keys (max 16)", k, len(ct.m), len(ct.keys))
		}
	}
	for _, k := range ct.keys {
		if ct.m[k] == nil {
			t.Fatalf("key %d listed but not in the map", k)
		}
	}
	if ct.m[1] == nil {
		t.Error("the heavy cluster was evicted")
	}
	if ct.evicted != 199-16 {
		t.Errorf("evicted %d, want %d", ct.evicted, 199-16)
	}
}

// TestQuarantineEviction: a full list first drops expired entries, then
// the sampled entry that ends soonest; it stays bounded and indexed.
func TestQuarantineEviction(t *testing.T) {
	q := newQuarantineList(16, 11, 12)
	id := func(i int) [16]byte { return [16]byte{byte(i), byte(i >> 8), 1} }
	const now = 1000
	for i := 0; i < 16; i++ {
		until := int64(now + 100 + i)
		if i < 8 {
			until = now - 1 // already over
		}
		q.add(id(i), until, now-500)
	}
	q.add(id(100), now+5000, now)
	if len(q.e) > 16 || q.evicted != 0 {
		t.Fatalf("with expired entries present: %d entries, %d live evictions", len(q.e), q.evicted)
	}
	for i := 8; i < 16; i++ {
		if q.until(id(i)) == 0 {
			t.Errorf("live entry %d dropped while expired ones remained", i)
		}
	}
	for i := 200; i < 240; i++ {
		q.add(id(i), now+10000, now)
		if len(q.e) > 16 || len(q.m) != len(q.e) {
			t.Fatalf("%d entries, %d indexed, max 16", len(q.e), len(q.m))
		}
	}
	if q.evicted == 0 {
		t.Error("no live eviction once nothing had expired")
	}
	for i, e := range q.e {
		if int(q.m[e.id]) != i {
			t.Fatalf("entry %d indexed at %d", i, q.m[e.id])
		}
	}
	q.remove(id(239))
	if q.until(id(239)) != 0 || len(q.m) != len(q.e) {
		t.Error("remove left the entry or broke the index")
	}
	if got := q.until(id(238)); got != now+10000 {
		t.Errorf("until = %d, want %d", got, now+10000)
	}
}
