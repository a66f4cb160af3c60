package extproc

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// node is a JSON value with its byte span, keys kept in document order.
type node struct {
	kind       byte // '{', '[', '"', 'n' (number), 'l' (literal)
	start, end int
	keys       []string
	kids       []*node
}

type spanParser struct {
	b []byte
	i int
}

func parseSpans(b []byte) (*node, error) {
	p := &spanParser{b: b}
	n, err := p.value()
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(b) {
		return nil, fmt.Errorf("trailing data at %d", p.i)
	}
	return n, nil
}

func (p *spanParser) ws() {
	for p.i < len(p.b) && strings.IndexByte(" \t\r\n", p.b[p.i]) >= 0 {
		p.i++
	}
}

func (p *spanParser) value() (*node, error) {
	p.ws()
	if p.i >= len(p.b) {
		return nil, fmt.Errorf("unexpected end")
	}
	n := &node{start: p.i}
	switch c := p.b[p.i]; {
	case c == '{':
		n.kind = '{'
		p.i++
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == '}' {
			p.i++
			break
		}
		for {
			k, err := p.value()
			if err != nil || k.kind != '"' {
				return nil, fmt.Errorf("bad key at %d", p.i)
			}
			key, err := strconv.Unquote(string(p.b[k.start:k.end]))
			if err != nil {
				key = string(p.b[k.start:k.end])
			}
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return nil, fmt.Errorf("missing colon at %d", p.i)
			}
			p.i++
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			n.keys = append(n.keys, key)
			n.kids = append(n.kids, v)
			p.ws()
			if p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == '}' {
				p.i++
				break
			}
			return nil, fmt.Errorf("bad object at %d", p.i)
		}
	case c == '[':
		n.kind = '['
		p.i++
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			break
		}
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			n.kids = append(n.kids, v)
			p.ws()
			if p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == ']' {
				p.i++
				break
			}
			return nil, fmt.Errorf("bad array at %d", p.i)
		}
	case c == '"':
		n.kind = '"'
		p.i++
		for p.i < len(p.b) && p.b[p.i] != '"' {
			if p.b[p.i] == '\\' {
				p.i++
			}
			p.i++
		}
		p.i++
	case c == '-' || (c >= '0' && c <= '9'):
		n.kind = 'n'
		for p.i < len(p.b) && strings.IndexByte("+-0123456789.eE", p.b[p.i]) >= 0 {
			p.i++
		}
	default:
		n.kind = 'l'
		for p.i < len(p.b) && p.b[p.i] >= 'a' && p.b[p.i] <= 'z' {
			p.i++
		}
	}
	n.end = p.i
	return n, nil
}

// edit replaces out[at:end] with text when reconstructing the input.
type edit struct {
	at, end int
	text    []byte
}

// rewriteCheck verifies that out is in rewritten by an output policy that
// rounds logprobs to dec decimals and keeps at most maxAlt alternatives,
// and that every other byte is unchanged: undoing the expected edits on out
// (original numbers back, dropped alternatives re-inserted) must give in
// byte for byte.
type rewriteCheck struct {
	in, out []byte
	dec     int
	maxAlt  int
	edits   []edit
	rounded int
}

func (c *rewriteCheck) run() error {
	ti, err := parseSpans(c.in)
	if err != nil {
		return fmt.Errorf("input: %v", err)
	}
	to, err := parseSpans(c.out)
	if err != nil {
		return fmt.Errorf("output is not JSON: %v", err)
	}
	if err := c.walk(ti, to, "", false); err != nil {
		return err
	}
	sort.Slice(c.edits, func(i, j int) bool { return c.edits[i].at < c.edits[j].at })
	var rebuilt []byte
	prev := 0
	for _, e := range c.edits {
		rebuilt = append(rebuilt, c.out[prev:e.at]...)
		rebuilt = append(rebuilt, e.text...)
		prev = e.end
	}
	rebuilt = append(rebuilt, c.out[prev:]...)
	if !bytes.Equal(rebuilt, c.in) {
		return fmt.Errorf("bytes outside logprob values and dropped alternatives changed:\n in: %s\nout: %s", c.in, c.out)
	}
	return nil
}

func (c *rewriteCheck) walk(a, b *node, key string, legacyTop bool) error {
	if a.kind != b.kind {
		return fmt.Errorf("%q: kind %c became %c", key, a.kind, b.kind)
	}
	switch a.kind {
	case '{':
		if legacyTop {
			// Legacy completions: a map token -> logprob per position.
			keep := len(a.kids)
			if c.maxAlt >= 0 {
				keep = min(keep, c.maxAlt)
			}
			if len(b.kids) != keep {
				return fmt.Errorf("legacy top_logprobs: %d alternatives, want %d", len(b.kids), keep)
			}
			for i := range b.kids {
				if a.keys[i] != b.keys[i] {
					return fmt.Errorf("legacy top_logprobs key %q became %q", a.keys[i], b.keys[i])
				}
				if err := c.number(a.kids[i], b.kids[i]); err != nil {
					return err
				}
			}
			c.dropped(a, b)
			return nil
		}
		if strings.Join(a.keys, ",") != strings.Join(b.keys, ",") {
			return fmt.Errorf("keys %v became %v", a.keys, b.keys)
		}
		for i := range a.kids {
			if err := c.walk(a.kids[i], b.kids[i], a.keys[i], false); err != nil {
				return err
			}
		}
	case '[':
		keep := len(a.kids)
		if key == "top_logprobs" && c.maxAlt >= 0 {
			keep = min(keep, c.maxAlt)
		}
		if len(b.kids) != keep {
			return fmt.Errorf("%q: %d elements, want %d", key, len(b.kids), keep)
		}
		legacy := key == "top_logprobs" && len(a.kids) > 0 && a.kids[0].kind == '{' && !hasKey(a.kids[0], "token")
		if legacy {
			keep = len(a.kids) // per-position maps are truncated, not the array
			if len(b.kids) != keep {
				return fmt.Errorf("legacy top_logprobs array changed length")
			}
		}
		for i := range b.kids {
			if key == "token_logprobs" {
				if err := c.number(a.kids[i], b.kids[i]); err != nil {
					return err
				}
				continue
			}
			if err := c.walk(a.kids[i], b.kids[i], key, legacy); err != nil {
				return err
			}
		}
		if !legacy {
			c.dropped(a, b)
		}
	case 'n':
		if key == "logprob" {
			return c.number(a, b)
		}
	}
	return nil
}

func hasKey(n *node, k string) bool {
	for _, x := range n.keys {
		if x == k {
			return true
		}
	}
	return false
}

// dropped records the re-insertion of elements b lost from a.
func (c *rewriteCheck) dropped(a, b *node) {
	k := len(b.kids)
	if k == len(a.kids) {
		return
	}
	var text []byte
	if k == 0 {
		text = c.in[a.kids[0].start:a.kids[len(a.kids)-1].end]
		// In objects the key precedes the value.
		if a.kind == '{' {
			text = c.in[a.start+1 : a.end-1]
		}
		c.edits = append(c.edits, edit{at: b.start + 1, end: b.end - 1, text: text})
		return
	}
	text = c.in[a.kids[k-1].end:a.kids[len(a.kids)-1].end]
	c.edits = append(c.edits, edit{at: b.kids[k-1].end, end: b.kids[k-1].end, text: text})
}

// number checks b is a rounded to dec decimals and records undoing it.
func (c *rewriteCheck) number(a, b *node) error {
	if a.kind == 'l' && b.kind == 'l' { // null logprob
		return nil
	}
	if a.kind != 'n' || b.kind != 'n' {
		return fmt.Errorf("logprob %s became %s", c.in[a.start:a.end], c.out[b.start:b.end])
	}
	as, bs := string(c.in[a.start:a.end]), string(c.out[b.start:b.end])
	av, err1 := strconv.ParseFloat(as, 64)
	bv, err2 := strconv.ParseFloat(bs, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("unparseable logprob %s -> %s", as, bs)
	}
	if c.dec >= 0 {
		p := math.Pow(10, float64(c.dec))
		want := math.Round(av*p) / p
		if math.Abs(bv-want) > 1e-9 {
			return fmt.Errorf("logprob %s rounded to %s, want %v", as, bs, want)
		}
		if strings.ContainsAny(bs, "eE") {
			return fmt.Errorf("rounded logprob %s in exponent form", bs)
		}
		if i := strings.IndexByte(bs, '.'); i >= 0 && len(bs)-i-1 > c.dec {
			return fmt.Errorf("logprob %s has more than %d decimals", bs, c.dec)
		}
	}
	if as != bs {
		c.rounded++
		c.edits = append(c.edits, edit{at: b.start, end: b.end, text: c.in[a.start:a.end]})
	}
	return nil
}

// sseEvents splits an SSE body into events (each ending in a blank line);
// a trailing partial event is returned too.
func sseEvents(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\n\n"))
		if i < 0 {
			out = append(out, b)
			break
		}
		out = append(out, b[:i+2])
		b = b[i+2:]
	}
	return out
}

// eventData returns the data line of an event.
func eventData(ev []byte) []byte {
	for _, line := range bytes.Split(ev, []byte("\n")) {
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			return d
		}
	}
	return nil
}
