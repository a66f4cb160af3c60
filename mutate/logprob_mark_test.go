package mutate

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/watermark"
)

func TestLogprobMarkMatchesShiftTop(t *testing.T) {
	k, err := watermark.NewKey("lp", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	mark, err := watermark.NewLogprobMark(k, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	prompt := []byte("Explain why the sky is blue")
	toks := []string{"The", " sky", " is", " blue", "\u00e9t\\\"e"}
	var entries []string
	for i, tok := range toks {
		q, _ := json.Marshal(tok)
		entries = append(entries, fmt.Sprintf(`{"token":%s,"logprob":-0.1,"top_logprobs":[{"token":%s,"logprob":-0.1},{"token":" a%d","logprob":-1.5},{"token":" b%d","logprob":-1.6},{"token":" c","logprob":-4}]}`, q, q, i, i))
	}
	body := `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"logprobs":{"content":[` + strings.Join(entries, ",") + `]},"finish_reason":"stop"}]}`
	for _, dec := range []int{-1, 3} {
		p := Passthrough()
		p.RoundDecimals = dec
		rw := NewRewriterFor(FormatOpenAI, p, 1, WithLogprobShift(NewLogprobMark(mark, prompt)))
		out, err := rw.Rewrite(nil, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Choices []struct {
				Logprobs struct {
					Content []struct {
						Token   string                   `json:"token"`
						Logprob float64                  `json:"logprob"`
						Top     []watermark.TokenLogprob `json:"top_logprobs"`
					} `json:"content"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		sh := mark.NewShifter()
		h := sh.TextContext(prompt)
		changed := 0
		for i, e := range got.Choices[0].Logprobs.Content {
			want := []watermark.TokenLogprob{{Token: toks[i], Logprob: -0.1}, {Token: fmt.Sprintf(" a%d", i), Logprob: -1.5}, {Token: fmt.Sprintf(" b%d", i), Logprob: -1.6}, {Token: " c", Logprob: -4}}
			sh.ShiftTop(h, want)
			for j := range want {
				w := want[j].Logprob
				if dec >= 0 {
					w = math.Round(w*1000) / 1000
				}
				if math.Abs(e.Top[j].Logprob-w) > 1e-12 || e.Top[j].Token != want[j].Token {
					t.Fatalf("decimals %d, position %d alt %d: %v, want %v", dec, i, j, e.Top[j], want[j])
				}
				if j > 0 && e.Top[j].Logprob > e.Top[j-1].Logprob {
					t.Fatalf("order lost at %d: %v", i, e.Top)
				}
				if j > 0 && e.Top[j].Logprob != []float64{-0.1, -1.5, -1.6, -4}[j] {
					changed++
				}
			}
			if e.Logprob != e.Top[0].Logprob {
				t.Fatalf("sampled token %v, its alternative %v", e.Logprob, e.Top[0])
			}
		}
		if changed == 0 {
			t.Fatal("the mark changed no value")
		}
	}
}

// TestProbeContextIsThePrompt: the context the verifier reads from a probe
// set (watermark.ReadProbeContexts) is the prompt the server keys the
// logprob mark on (ParseRequest's Prompt) for the same messages: the
// newest user turn, its text parts joined as the server joins them, the
// system prompt and earlier turns left out, and cut where the server's
// processing.max_prompt_bytes cuts it (inside a part, on the line feed
// between parts, before a rune that does not fit).
func TestProbeContextIsThePrompt(t *testing.T) {
	for _, msgs := range []string{
		`[{"role":"user","content":"How many apples?"}]`,
		`[{"role":"system","content":"be brief"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"second turn"}]`,
		`[{"role":"user","content":[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]},{"role":"assistant","content":"done"}]`,
		`[{"role":"user","content":[{"type":"text","text":"1234567"},{"type":"text","text":"ünïcödé wörds"}]}]`,
		`[{"role":"user","content":"Ein Apfel für fünf Äpfel, über alles"}]`,
	} {
		for _, max := range []int{0, 7, 8, 9, 10, 11, 12, 13, 25, watermark.DefaultMaxPromptBytes} {
			probes, err := watermark.ReadProbeContexts(strings.NewReader(`{"messages":`+msgs+"}\n"), max)
			if err != nil {
				t.Fatalf("%s: %v", msgs, err)
			}
			req, err := ParseRequest([]byte(`{"model":"m","messages":`+msgs+`}`), max)
			if err != nil {
				t.Fatal(err)
			}
			if len(probes) != 1 || probes[0].Text != req.Prompt || req.Prompt == "" {
				t.Errorf("%s, max %d: verifier context %q, server prompt %q", msgs, max, probes[0].Text, req.Prompt)
			}
		}
	}
	if _, err := watermark.ReadProbeContexts(strings.NewReader(`{"messages":[{"role":"system","content":"x"}]}`+"\n"), 0); err == nil {
		t.Error("a probe without a user message was read")
	}
}
