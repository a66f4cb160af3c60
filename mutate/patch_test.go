package mutate

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// containerItems returns the spans of the items of the (valid) array or
// object that doc is: elements, or members from the name's opening quote.
func containerItems(t *testing.T, doc []byte) []span {
	t.Helper()
	s := scanner{b: doc}
	s.ws()
	var out []span
	var err error
	if s.peek() == '{' {
		err = s.eachMember(func(ks, ke int) error {
			e := s.skipValue(1)
			out = append(out, span{ks - 1, s.i})
			return e
		})
	} else {
		err = s.eachElem(func(int) error {
			vs := s.i
			e := s.skipValue(1)
			out = append(out, span{vs, s.i})
			return e
		})
	}
	if err != nil {
		t.Fatalf("%q: %v", doc, err)
	}
	return out
}

// TestDropper deletes every subset of the items of arrays and objects,
// compact and spaced: the result is valid JSON holding exactly the kept
// items, and for compact input it is the kept items joined by commas.
func TestDropper(t *testing.T) {
	for _, c := range []string{
		`[1,"b",[3],{"d":4}]`, `[ 1 , "b" ,[3], {"d":4} ]`, "[\n1,\n2,\n3\n]", `[7]`, `[]`,
		`{"a":1,"b":[2],"c":{"x":3},"d":null}`, `{ "a" : 1 , "b":2 }`, `{"a":1}`, `{}`,
	} {
		doc := []byte(c)
		items := containerItems(t, doc)
		open := bytes.IndexAny(doc, "[{")
		closeAt := bytes.LastIndexAny(doc, "]}")
		for mask := 0; mask < 1<<len(items); mask++ {
			var l patchList
			l.reset(doc)
			d := l.dropper()
			var kept []string
			for j, it := range items {
				keep := mask&(1<<j) != 0
				d.item(it.s, it.e, keep)
				if keep {
					kept = append(kept, string(doc[it.s:it.e]))
				}
			}
			d.done(open, closeAt)
			out, changed := l.apply(nil)
			if want := len(kept) < len(items); changed != want {
				t.Errorf("%s mask %b: changed=%v, want %v", c, mask, changed, want)
			}
			if !json.Valid(out) {
				t.Fatalf("%s mask %b: invalid output %q", c, mask, out)
			}
			var got, want any
			_ = json.Unmarshal(out, &got)
			wantText := string(doc[:open+1]) + strings.Join(kept, ",") + string(doc[closeAt:])
			if err := json.Unmarshal([]byte(wantText), &want); err != nil {
				t.Fatalf("%s: bad expectation %q", c, wantText)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s mask %b: got %s, want the kept items %s", c, mask, out, wantText)
			}
			if !bytes.ContainsAny(doc, " \n") && string(out) != wantText {
				t.Errorf("%s mask %b: got %s, want %s", c, mask, out, wantText)
			}
		}
	}
}

func TestPatchList(t *testing.T) {
	doc := []byte(`{"a":0.125,"b":"xy","c":[1,2,3]}`)
	var l patchList
	l.reset(doc)
	// Out of order, and two adjacent deletions (the ",2" and ",3" of c).
	l.del(26, 28)
	l.del(28, 30)
	l.replace(16, 18, "zz")
	l.roundNum(5, 10, 2)
	if len(l.ps) != 3 || !l.unsorted {
		t.Fatalf("%d patches, unsorted=%v: want 3 (deletions merged), unsorted", len(l.ps), l.unsorted)
	}
	out, changed := l.apply([]byte("prefix:"))
	if want := `prefix:{"a":0.13,"b":"zz","c":[1]}`; string(out) != want || !changed {
		t.Errorf("got %s (changed %v), want %s", out, changed, want)
	}

	// Replacements that keep the bytes add nothing.
	l.reset(doc)
	l.replace(16, 18, "xy")
	l.roundNum(5, 10, 3) // 0.125 at 3 decimals is itself
	l.replaceNum(5, 10, 0.125, 0.125, -1)
	if len(l.ps) != 0 {
		t.Fatalf("%d patches for unchanged values, want 0", len(l.ps))
	}
	if out, changed := l.apply(nil); changed || !bytes.Equal(out, doc) {
		t.Errorf("no patches: got %s, changed %v", out, changed)
	}

	// A literal equal to the original is dropped, a different one applied.
	l.reset(doc)
	l.replaceLit(16, 18, append(l.litBuf(), "xy"...))
	if len(l.ps) != 0 || len(l.lit) != 0 {
		t.Fatalf("equal literal kept: %d patches, %d literal bytes", len(l.ps), len(l.lit))
	}
	l.replaceLit(16, 18, append(l.litBuf(), "QQ"...))
	if out, _ := l.apply(nil); string(out) != `{"a":0.125,"b":"QQ","c":[1,2,3]}` {
		t.Errorf("literal: got %s", out)
	}

	// keepLF: a replaced range keeps its line feeds.
	ml := []byte("{\"a\":[1,\n2,\n3],\"b\":1}")
	l.reset(ml)
	l.keepLF = true
	l.del(7, 13)
	out, _ = l.apply(nil)
	if bytes.Count(out, []byte{'\n'}) != 2 || !json.Valid(out) {
		t.Errorf("keepLF: got %q, want 2 line feeds kept", out)
	}
}
