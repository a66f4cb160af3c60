package mutate

import (
	"strings"
	"testing"
)

// TestGuardSpecMatchesFieldTable holds the strict reader's guarded fields
// to the request tables (RequestFieldsFor): every field a policy acts on
// is guarded in its format with a role that gives it that meaning and a
// type the table declares, so the two cannot drift apart.
func TestGuardSpecMatchesFieldTable(t *testing.T) {
	roles := func(rs ...fieldRole) []fieldRole { return rs }
	for _, f := range Formats() {
		tab := RequestFieldsFor(f)
		groups := []struct {
			what   string
			fields []RequestField
			roles  []fieldRole
		}{
			{"Logprobs", tab.Logprobs, roles(roleLogprobs, roleAsk, roleTopK, roleInclude)},
			{"TopLogprobs", tab.TopLogprobs, roles(roleLogprobs, roleTopK)},
			{"PromptLogprobs", tab.PromptLogprobs, roles(rolePromptK, rolePromptAsk, roleEcho)},
			{"N", tab.N, roles(roleN)},
			{"LogitBias", tab.LogitBias, roles(roleBias)},
			{"MaxTokens", tab.MaxTokens, roles(roleType)},
		}
		for _, g := range groups {
			for _, rf := range g.fields {
				if strings.Contains(rf.Path, "[]") {
					continue
				}
				parent, name, nested := strings.Cut(rf.Path, ".")
				if !nested {
					parent, name = "", rf.Path
				}
				for _, spell := range spellings(tab, parent, name) {
					if spell[0] != "" && !nestedParent(f)(canonicalName(f, spell[0])) {
						t.Errorf("%v: %s: %q is not read as a nested object", f, g.what, spell[0])
					}
					spec, ok := guardSpec(canonicalName(f, spell[0]), canonicalName(f, spell[1]), f)
					if !ok {
						t.Errorf("%v: %s field %s (%s) is not guarded", f, g.what, rf.Path, spell[1])
						continue
					}
					found := false
					for _, r := range g.roles {
						found = found || spec.role == r
					}
					if !found {
						t.Errorf("%v: %s field %s has role %d", f, g.what, rf.Path, spec.role)
					}
					if !typeFits(rf.Type, spec.typ) {
						t.Errorf("%v: %s field %s is %v in the table, guarded as %d", f, g.what, rf.Path, rf.Type, spec.typ)
					}
				}
			}
		}
	}
}

// spellings returns the (parent, name) spellings an upstream accepts.
func spellings(tab RequestFields, parent, name string) [][2]string {
	out := [][2]string{{parent, name}}
	if tab.ProtoNames {
		out = append(out, [2]string{ProtoName(parent), ProtoName(name)})
	}
	return out
}

func typeFits(t FieldType, g fieldType) bool {
	switch t {
	case TypeBool:
		return g == tBool || g == tIntOrBool
	case TypeInt:
		return g == tInt || g == tIntOrBool
	case TypeNumber:
		return g == tNumber
	case TypeString:
		return g == tString
	case TypeObject:
		return g == tObject || g == tObjectOrArray
	case TypeArray:
		return g == tArray || g == tStringArray || g == tObjectOrArray
	}
	return true
}
