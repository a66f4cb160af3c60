package mutate

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// topMembersCases are bodies whose top level ParseRequest reads: repeated
// keys, escaped and non-ASCII keys, invalid UTF-8 in a key, null values,
// whitespace everywhere, nested values.
var topMembersCases = []string{
	`{}`, ` { } `, `{"model":"m"}`, `{"a":1,"a":2}`, `{"a":1,"b":null,"a":[3]}`,
	`{"\u006dodel":"x","model":"y"}`, `{"model":"y","\u006dodel":"x"}`, `{"mod\"el":1}`, "{\"k\xff\":1}",
	`{"é":1,"e":2}`, ` { "messages" : [ {"role":"user"} , 2 ] , "n" : 1 } `, "{\n\"a\"\t:\r[1,\n2]}",
	`{"messages":null,"input":"x","prompt":[1,2,3],"include":["a","b"]}`, `{"":0,"":1}`,
	`{"a":{"b":{"c":[{},[],"",0,true,false,null]}}}`,
}

// arrayCases are member values jsonArray splits.
var arrayCases = []string{
	`[]`, ` [ ] `, `[1]`, `[1,2,3]`, ` [ 1 , {"a" : 2} , [3,4] , "x" , null ] `, `null`, `"x"`, `1`, `{}`, `true`,
	`[[1,2],[3]]`, `["a","b"]`, ``,
}

// TestTopMembersMatchEncodingJSON: the scanner's view of the top level is
// what encoding/json decodes into a map[string]json.RawMessage (the
// implementation ParseRequest had), key for key and value byte for byte,
// and ShapeKeys are the map's keys.
func TestTopMembersMatchEncodingJSON(t *testing.T) {
	for _, c := range topMembersCases {
		checkTopMembers(t, []byte(c))
	}
}

func TestJSONArrayMatchesEncodingJSON(t *testing.T) {
	for _, c := range arrayCases {
		checkJSONArray(t, []byte(c))
	}
}

func FuzzTopMembers(f *testing.F) {
	for _, c := range topMembersCases {
		f.Add([]byte(c))
	}
	for _, c := range arrayCases {
		f.Add([]byte(`{"a":` + c + `}`))
	}
	for _, c := range []string{``, ` `, `[1]`, `"x"`, `{`, `{"a":1}x`, `{"a" 1}`, `{"a":1,}`, `{"a":[1,]}`, `{a:1}`, "{\"a\":\"\x01\"}",
		`{"a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`} {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// topMembers validates in the same pass: it fails exactly where
		// validTop does, with the same error.
		top, err := topMembers(body)
		if want := validTop(body); err != want {
			t.Fatalf("%q: topMembers error %v, validTop %v", body, err, want)
		}
		if err != nil {
			return
		}
		checkTopMembers(t, body)
		for _, m := range top {
			checkJSONArray(t, m.raw)
		}
	})
}

func checkTopMembers(t *testing.T, body []byte) {
	t.Helper()
	if err := validTop(body); err != nil {
		t.Fatalf("%q: not a valid case: %v", body, err)
	}
	var want map[string]json.RawMessage
	if err := json.Unmarshal(body, &want); err != nil {
		t.Fatalf("%q: %v", body, err)
	}
	top, err := topMembers(body)
	if err != nil {
		t.Fatalf("%q: topMembers: %v", body, err)
	}
	for k, v := range want {
		if got := top.get(k); !bytes.Equal(got, v) {
			t.Errorf("%q: member %q = %q, encoding/json %q", body, k, got, v)
		}
	}
	if top.get("no such member") != nil {
		t.Errorf("%q: an absent member is not nil", body)
	}
	req, err := ParseRequest(body, 0)
	if err != nil {
		t.Fatalf("%q: %v", body, err)
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(req.ShapeKeys, keys) {
		t.Errorf("%q: ShapeKeys %q, map keys %q", body, req.ShapeKeys, keys)
	}
}

func checkJSONArray(t *testing.T, raw []byte) {
	t.Helper()
	var want []json.RawMessage
	wantOK := json.Unmarshal(raw, &want) == nil
	got, ok := jsonArray(raw)
	if ok != wantOK {
		t.Fatalf("%q: jsonArray ok=%v, encoding/json ok=%v", raw, ok, wantOK)
	}
	if !ok {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%q: %d elements, encoding/json %d", raw, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%q: element %d = %q, encoding/json %q", raw, i, got[i], want[i])
		}
	}
}
