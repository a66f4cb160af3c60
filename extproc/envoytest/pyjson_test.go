package envoytest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf16"
)

// canonical renders a PyLoads value in the form pyCanonical prints it:
// floats by their bits, strs by their code points, dicts in insertion
// order.
func canonical(v any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case nil:
			b.WriteString("N")
		case bool:
			fmt.Fprintf(&b, "B%v", x)
		case PyInt:
			fmt.Fprintf(&b, "I%s", x.String())
		case float64:
			if math.IsNaN(x) {
				b.WriteString("NaN") // NaN bits are not canonical
				break
			}
			fmt.Fprintf(&b, "F%016x", math.Float64bits(x))
		case PyStr:
			b.WriteString("S")
			for _, r := range decodeGeneralized(string(x)) {
				fmt.Fprintf(&b, "%x.", r)
			}
		case []any:
			b.WriteString("[")
			for _, e := range x {
				walk(e)
				b.WriteString(",")
			}
			b.WriteString("]")
		case *PyObject:
			b.WriteString("{")
			for _, k := range x.Keys {
				walk(k)
				b.WriteString(":")
				walk(x.Values[k])
				b.WriteString(",")
			}
			b.WriteString("}")
		}
	}
	walk(v)
	return b.String()
}

// decodeGeneralized decodes a PyStr back to code points.
func decodeGeneralized(s string) []rune {
	var out []rune
	b := []byte(s)
	for i := 0; i < len(b); {
		if b[i] == 0xed && i+2 < len(b) && b[i+1] >= 0xa0 {
			out = append(out, rune(0xd000|rune(b[i+1]&0x3f)<<6|rune(b[i+2]&0x3f)))
			i += 3
			continue
		}
		r := []rune(string(b[i:min(i+4, len(b))]))[0]
		out = append(out, r)
		i += len(string(r))
	}
	return out
}

// pyCanonical is canonical in Python, one line per input (base64 on stdin),
// "E" for any exception json.loads raises.
const pyCanonical = `
import base64, json, math, struct, sys
sys.setrecursionlimit(1000)
def c(v):
    if v is None: return "N"
    if v is True: return "BTrue".replace("True", "true")
    if v is False: return "Bfalse"
    if isinstance(v, int): return "I%d" % v
    if isinstance(v, float):
        if math.isnan(v): return "NaN"
        return "F%016x" % struct.unpack(">Q", struct.pack(">d", v))[0]
    if isinstance(v, str): return "S" + "".join("%x." % ord(ch) for ch in v)
    if isinstance(v, list): return "[" + "".join(c(e) + "," for e in v) + "]"
    if isinstance(v, dict): return "{" + "".join(c(k) + ":" + c(x) + "," for k, x in v.items()) + "}"
    raise TypeError(type(v))
for line in sys.stdin:
    b = base64.b64decode(line.strip())
    try:
        out = c(json.loads(b))
    except Exception:
        out = "E"
    sys.stdout.write(out + "\n")
`

func utf16Bytes(s string, big bool, bom bool) []byte {
	var out []byte
	u := utf16.Encode([]rune(s))
	if bom {
		u = append([]uint16{0xfeff}, u...)
	}
	for _, c := range u {
		if big {
			out = append(out, byte(c>>8), byte(c))
		} else {
			out = append(out, byte(c), byte(c>>8))
		}
	}
	return out
}

func utf32Bytes(s string, big bool) []byte {
	var out []byte
	for _, r := range s {
		c := uint32(r)
		if big {
			out = append(out, byte(c>>24), byte(c>>16), byte(c>>8), byte(c))
		} else {
			out = append(out, byte(c), byte(c>>8), byte(c>>16), byte(c>>24))
		}
	}
	return out
}

// trickyJSON are inputs where Python's reading differs from RFC 8259 or
// from encoding/json's.
func trickyJSON() [][]byte {
	probe := `{"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100}}`
	cases := []string{
		probe, `{}`, `[]`, `0`, `-0`, `1.0`, `1e400`, `-1e400`, `1e-400`, `2e1`, `20.0`, `123456789012345678901234567890`,
		strings.Repeat("9", 4300), strings.Repeat("9", 4301), `NaN`, `Infinity`, `-Infinity`, `{"x":NaN}`, `-NaN`, `nan`,
		`{"a":1,"a":2}`, `{"a":1,"b":2,"a":3}`, `{"logit\u005fbias":{}}`, `"\ud800"`, `"\ud83d\ude00"`, `"\udc00\ud800"`,
		`"\u00e9"`, "\"\xed\xa0\x80\"", "\"\xff\"", "\"\x01\"", `"\/"`, `"\x"`, `"\u12"`, `{"a" : 1 }`, "{\"a\":1}\n",
		"{\"a\":1}\v", `{"a":1,}`, `[1,]`, `01`, `1.`, `.5`, `+1`, `1e`, `1e+`, `1E5`, `tru`, `true`, `nul`,
		"\xef\xbb\xbf" + probe, "\xef\xbb\xbf\xef\xbb\xbf" + probe, "\u00a0" + probe, " \t\r\n" + probe,
		strings.Repeat("[", 130) + strings.Repeat("]", 130), strings.Repeat("[", 1200) + strings.Repeat("]", 1200),
		`{"top_logprobs":"20","logprobs":"true"}`, `[1,2`, `"`, ``, ` `, `{"a":"b"}x`, "{\"a\":\"b\"}\x00",
	}
	var out [][]byte
	for _, c := range cases {
		out = append(out, []byte(c))
	}
	for _, big := range []bool{true, false} {
		for _, bom := range []bool{true, false} {
			out = append(out, utf16Bytes(probe, big, bom))
		}
		out = append(out, utf32Bytes(probe, big))
	}
	out = append(out, append([]byte{0xff, 0xfe, 0, 0}, utf32Bytes(probe, false)...), append([]byte{0, 0, 0xfe, 0xff}, utf32Bytes(probe, true)...))
	out = append(out, []byte{0, '{'}, []byte{'{', 0}, utf16Bytes(`"\ud800"`, false, false), append(utf16Bytes(`"`, false, false), 0x00, 0xd8, '"', 0))
	return out
}

// mutations derives deterministic variants of the tricky inputs: bytes
// flipped, inserted, deleted, duplicated.
func mutations(seed [][]byte, n int) [][]byte {
	r := rand.New(rand.NewPCG(11, 12))
	alphabet := []byte(`{}[]",:0123456789.eE+-\ufdbntrlsaINy` + "\x00\xef\xbb\xbf\xed\xa0\x80 \t\n")
	out := make([][]byte, 0, n)
	for len(out) < n {
		b := bytes.Clone(seed[r.IntN(len(seed))])
		for k := r.IntN(3) + 1; k > 0; k-- {
			if len(b) == 0 {
				b = append(b, alphabet[r.IntN(len(alphabet))])
				continue
			}
			i := r.IntN(len(b))
			switch r.IntN(4) {
			case 0:
				b[i] = alphabet[r.IntN(len(alphabet))]
			case 1:
				b = append(b[:i], append([]byte{alphabet[r.IntN(len(alphabet))]}, b[i:]...)...)
			case 2:
				b = append(b[:i], b[i+1:]...)
			default:
				j := i + r.IntN(len(b)-i)
				b = append(b[:j], append(bytes.Clone(b[i:j]), b[j:]...)...)
			}
		}
		out = append(out, b)
	}
	return out
}

// TestPyLoadsMatchesPython compares the Go model of json.loads with the
// real python3 on the tricky inputs and 3,000 variants of them. Without
// python3 it says so and checks the fixed expectations only (CI runs it
// with python3).
func TestPyLoadsMatchesPython(t *testing.T) {
	inputs := trickyJSON()
	inputs = append(inputs, mutations(inputs, 3000)...)
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is needed to check the json.loads model")
		}
		t.Skip("no python3: the json.loads model is checked against fixed expectations only (TestPyLoadsKnown)")
	}
	var stdin bytes.Buffer
	for _, in := range inputs {
		stdin.WriteString(base64.StdEncoding.EncodeToString(in) + "\n")
	}
	cmd := exec.Command(py, "-c", pyCanonical)
	cmd.Stdin = &stdin
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 16<<20)
	i := 0
	for ; sc.Scan(); i++ {
		want := sc.Text()
		v, err := PyLoads(inputs[i])
		got := "E"
		if err == nil {
			got = canonical(v)
		}
		if got != want {
			t.Errorf("input %d %q:\n go     %.200s\n python %.200s", i, hex.EncodeToString(inputs[i][:min(len(inputs[i]), 40)]), got, want)
		}
	}
	if i != len(inputs) {
		t.Fatalf("python answered %d of %d inputs", i, len(inputs))
	}
}

// TestPyLoadsKnown pins what the model reads for the wrappings distillguard
// refuses, independently of python3.
func TestPyLoadsKnown(t *testing.T) {
	cases := []struct {
		in   string
		want string
	}{
		{`{"a":1,"a":2}`, "{S61.:I2,}"},
		{"\xef\xbb\xbf{}", "{}"},
		{`[NaN]`, "[NaN,]"},
		{`{"logit\u005fbias":1}`, "{S6c.6f.67.69.74.5f.62.69.61.73.:I1,}"},
		{`"\ud800"`, "Sd800."},
		{`1e400`, "F7ff0000000000000"},
		{string(utf16Bytes(`{"a":1}`, false, false)), "{S61.:I1,}"},
	}
	for _, tc := range cases {
		v, err := PyLoads([]byte(tc.in))
		if err != nil || canonical(v) != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.in, canonical(v), err, tc.want)
		}
	}
	for _, bad := range []string{"\"\xff\"", `{"a":1,}`, `01`, strings.Repeat("[", 1200) + strings.Repeat("]", 1200), strings.Repeat("1", 4301)} {
		if _, err := PyLoads([]byte(bad)); err == nil {
			t.Errorf("%.40q accepted", bad)
		}
	}
}

// TestPydanticLax pins the lax coercions the model applies (pydantic-core
// shared.rs, conversion table) on the values json.loads produces.
func TestPydanticLax(t *testing.T) {
	ints := []struct {
		in   any
		want int64
		ok   bool
	}{
		{PyStr("20"), 20, true}, {PyStr(" 20 "), 20, true}, {PyStr("\u00a020\n"), 20, true}, {PyStr("+20"), 20, true},
		{PyStr("020"), 20, true}, {PyStr("20.0"), 20, true}, {PyStr("20.000"), 20, true}, {PyStr("2_0"), 20, true},
		{PyStr("-0_5"), -5, true}, {PyStr("0"), 0, true}, {PyStr("000"), 0, true},
		{PyStr("20."), 0, false}, {PyStr("2e1"), 0, false}, {PyStr("0x14"), 0, false}, {PyStr("2__0"), 0, false},
		{PyStr("_20"), 0, false}, {PyStr("+-2"), 0, false}, {PyStr("--2"), 0, false}, {PyStr("20.5"), 0, false}, {PyStr(""), 0, false},
		{20.0, 20, true}, {2e1, 20, true}, {20.5, 0, false}, {math.Inf(1), 0, false}, {math.NaN(), 0, false}, {1e19, 0, false},
		{true, 1, true}, {false, 0, true}, {nil, 0, false}, {[]any{}, 0, false},
	}
	for _, tc := range ints {
		got, ok := laxInt(tc.in)
		if ok != tc.ok || ok && got.Int64() != tc.want {
			t.Errorf("laxInt(%#v) = %v %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	bools := []struct {
		in   any
		want bool
		ok   bool
	}{
		{PyStr("true"), true, true}, {PyStr("TRUE"), true, true}, {PyStr("Yes"), true, true}, {PyStr("on"), true, true},
		{PyStr("t"), true, true}, {PyStr("y"), true, true}, {PyStr("1"), true, true}, {PyStr("0"), false, true},
		{PyStr("Off"), false, true}, {PyStr("no"), false, true}, {PyStr(" true"), false, false}, {PyStr("2"), false, false},
		{1.0, true, true}, {0.0, false, true}, {0.5, false, false}, {true, true, true},
	}
	for _, tc := range bools {
		got, ok := laxBool(tc.in)
		if ok != tc.ok || ok && got != tc.want {
			t.Errorf("laxBool(%#v) = %v %v, want %v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	one, _ := laxBool(PyInt{big.NewInt(1)})
	if !one {
		t.Error("laxBool(1) is not true")
	}
	r := ReadLenient("chat", []byte(`{"logprobs":"yes","top_logprobs":"20","logit_bias":{"1":"5"},"logit_bias":{"2":1}}`))
	if !r.Valid || !r.Logprobs || r.Alternatives.Int64() != 20 || !r.LogitBias {
		t.Errorf("numeric strings: %+v", r)
	}
	if v := r.Violation(Limits{MaxTopLogprobs: 5, DropLogitBiasWithLogprobs: true}); v == "" {
		t.Error("no violation found in the lenient reading of a probe")
	}
	r = ReadLenient("chat", []byte(`{"echo":true,"logit_bias":{"1":1}}`))
	if !r.PromptLogprobs || r.Violation(Limits{MaxTopLogprobs: 5, DropLogitBiasWithLogprobs: true}) == "" {
		t.Errorf("echo on chat asks for prompt logprobs: %+v", r)
	}
}
