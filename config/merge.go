package config

import (
	"bytes"
	"fmt"
	"sort"

	"gopkg.in/yaml.v3"
)

// Policy sets are layered, not replaced: a file that says only
//
//	policies:
//	  default:
//	    allow: {output: {round_decimals: 3}}
//
// changes allow's rounding and keeps everything else of the embedded
// default set (allow's other fields, degrade, throttle, block). Rules:
//
//   - the file's policies.default is layered over the embedded default
//     set; every other set, the file's and the embedded ones, over that
//     effective default;
//   - a tier the set does not name is inherited whole; a tier it names is
//     layered field by field (mappings merged, anything else replaced);
//   - a tier that names output or request but not reject is a rewriting
//     tier: the inherited reject is dropped (throttle: {output: {...}}
//     turns the throttle tier into a rewrite);
//   - an explicit null removes what it names: reject: null makes a tier
//     stop rejecting, round_decimals: null leaves logprobs unrounded, and
//     throttle: null leaves the tier empty (no rewrite, no reject).

// tierNames are the tiers of a set, the optional probation tier included
// (it layers like the others: a set that leaves it out inherits the
// default set's, probation: null gives the set's new identities allow).
var tierNames = [...]string{"allow", "degrade", "throttle", "block", "probation"}

// mergePolicies returns the effective policy sets of file layered over the
// embedded default (both YAML documents). The file has been decoded
// strictly already, so every key it has is a known one.
func mergePolicies(embedded, file []byte) (map[string]PolicySet, error) {
	base, err := policiesOf(embedded)
	if err != nil {
		return nil, fmt.Errorf("embedded default: %w", err)
	}
	over, err := policiesOf(file)
	if err != nil {
		return nil, err
	}
	def := mergeSet(asMap(base["default"]), over, "default")
	raw := map[string]map[string]any{"default": def}
	for name, v := range base {
		if name != "default" {
			raw[name] = mergeSet(def, map[string]any{name: v}, name)
		}
	}
	for name := range over {
		if name != "default" {
			raw[name] = mergeSet(def, over, name)
		}
	}
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]PolicySet, len(raw))
	for _, name := range names {
		var ps PolicySet
		if err := decodeSet(raw[name], &ps); err != nil {
			return nil, fmt.Errorf("policies.%s: %w", name, err)
		}
		out[name] = ps
	}
	return out, nil
}

// policiesOf returns the policies mapping of a YAML document (nil when it
// has none).
func policiesOf(doc []byte) (map[string]any, error) {
	var top map[string]any
	if err := yaml.Unmarshal(doc, &top); err != nil {
		return nil, err
	}
	p, _ := top["policies"].(map[string]any)
	return p, nil
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// mergeSet layers the set named name of over (when present) over base.
func mergeSet(base map[string]any, over map[string]any, name string) map[string]any {
	out := map[string]any{}
	for _, t := range tierNames {
		if v, ok := base[t]; ok {
			out[t] = deepCopy(v)
		}
	}
	o, present := over[name]
	if !present {
		return out
	}
	om := asMap(o)
	for _, t := range tierNames {
		tv, named := om[t]
		if !named {
			continue
		}
		if tv == nil {
			out[t] = map[string]any{} // throttle: null — an empty tier
			continue
		}
		out[t] = mergeTier(asMap(out[t]), asMap(tv))
	}
	return out
}

// mergeTier layers a tier over the inherited one.
func mergeTier(base, over map[string]any) map[string]any {
	m := asMap(deepMerge(base, over))
	_, hasOut := over["output"]
	_, hasReq := over["request"]
	if _, hasRej := over["reject"]; !hasRej && (hasOut || hasReq) {
		delete(m, "reject")
	}
	return m
}

// deepMerge layers over on base: mappings key by key, anything else (a
// scalar, a list, null) replaced.
func deepMerge(base, over any) any {
	bm, bok := base.(map[string]any)
	om, ook := over.(map[string]any)
	if !bok || !ook {
		return deepCopy(over)
	}
	out := asMap(deepCopy(bm))
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range om {
		out[k] = deepMerge(out[k], v)
	}
	return out
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// decodeSet decodes a merged set into ps, strictly.
func decodeSet(m map[string]any, ps *PolicySet) error {
	b, err := yaml.Marshal(m)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(ps)
}
