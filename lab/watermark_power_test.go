package lab

import (
	"os"
	"strconv"
	"testing"

	"github.com/distillguard/distillguard/watermark"
)

// TestWatermarkPowerSeeds prints the detection p-value of a bigram student
// of 2,000 marked responses from 500 outputs over several seeds; run with
// WATERMARK_POWER=N (N seeds).
func TestWatermarkPowerSeeds(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("WATERMARK_POWER"))
	if n == 0 {
		t.Skip("set WATERMARK_POWER=N to run N seeds")
	}
	dir := os.Getenv("DISTILLGUARD_CORPUS")
	if dir == "" {
		dir = "../../shared/data"
	}
	corpora, err := loadTextCorpora(dir)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]string
	for _, c := range corpora {
		for _, t := range c.texts {
			docs = append(docs, tokenize(t))
		}
	}
	teacher := trainNgram(3, docs)
	for seed := uint64(1); seed <= uint64(n); seed++ {
		key := labWatermarkKey(seed, 40)
		embedded := watermark.DefaultLexicon()
		statsGen := newRand(seed, 47)
		own := make([][]byte, 50000)
		for i := range own {
			own[i] = []byte(detokenize(teacher.generate(statsGen, 60)))
		}
		lex := embedded.WithContextStats(watermark.BuildContextStats(embedded, own))
		marker := watermark.NewMarker(lex, key)
		ver := watermark.NewVerifier(lex)
		gen := newRand(seed, 41)
		chunks := newRand(seed, 42)
		var marked []string
		var st watermark.Stats
		for i := 0; i < 2000; i++ {
			tx := detokenize(teacher.generate(gen, 60))
			marked = append(marked, streamMark(marker, tx, chunks))
			_, s := marker.Mark([]byte(tx))
			st.Words += s.Words
			st.Candidates += s.Candidates
			st.Substituted += s.Substituted
		}
		var d [][]string
		for _, tx := range marked {
			d = append(d, tokenize(tx))
		}
		stu := trainNgram(2, d)
		r := newRand(seed, 53)
		outs := make([]string, 500)
		for i := range outs {
			outs[i] = detokenize(stu.generate(r, 60))
		}
		res := verifyTexts(ver, outs, key)
		a := marker.Assignment()
		t.Logf("seed %d: p=%.3g matches %d/%d cand %d; harvest words %d cand %.2f%% subst %.3f%%; assign free %.2f forced %.2f keyed %.2f tail %.2f",
			seed, res.PValue, res.Matches, res.Scored, res.Candidates, st.Words, 100*float64(st.Candidates)/float64(st.Words),
			100*float64(st.Substituted)/float64(st.Words), a.Free, a.Forced, a.Keyed, a.Tail)
	}
}
