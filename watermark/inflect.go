package watermark

import (
	"fmt"
	"strings"
)

// inflect fills forms for a member given as parts (base, then any irregular
// forms, as documented at synonymTable); missing forms follow the regular
// English spelling rules below. Consonant doubling ("permitted") and other
// irregular spellings are given explicitly in the table.
func inflect(pos byte, parts []string, forms *[numSlots]string) error {
	base := parts[0]
	if base == "" {
		return fmt.Errorf("empty word")
	}
	forms[slotBase] = base
	switch pos {
	case 'r', 'a':
		if len(parts) > 1 {
			return fmt.Errorf("%c words have one form", pos)
		}
	case 'A':
		if len(parts) != 1 && len(parts) != 3 {
			return fmt.Errorf("adjectives are given as base or base|er|est")
		}
		forms[slotS], forms[slotPast] = comparative(base), superlative(base)
		if len(parts) == 3 {
			forms[slotS], forms[slotPast] = parts[1], parts[2]
		}
	case 'n':
		if len(parts) > 2 {
			return fmt.Errorf("nouns are given as sg or sg|pl")
		}
		forms[slotS] = suffixS(base)
		if len(parts) == 2 {
			forms[slotS] = parts[1]
		}
	case 'v':
		if len(parts) != 1 && len(parts) != 3 && len(parts) != 4 {
			return fmt.Errorf("verbs are given as base, base|past|pp or base|past|pp|ing")
		}
		forms[slotS] = suffixS(base)
		forms[slotPast] = suffixED(base)
		forms[slotPP] = forms[slotPast]
		forms[slotIng] = suffixING(base)
		if len(parts) >= 3 {
			forms[slotPast], forms[slotPP] = parts[1], parts[2]
		}
		if len(parts) == 4 {
			forms[slotIng] = parts[3]
		}
	}
	return nil
}

func isVowel(c byte) bool { return strings.IndexByte("aeiou", c) >= 0 }

// consonantY reports a final y after a consonant ("try", not "stay").
func consonantY(w string) bool {
	n := len(w)
	return n >= 2 && w[n-1] == 'y' && !isVowel(w[n-2])
}

func suffixS(w string) string {
	switch {
	case consonantY(w):
		return w[:len(w)-1] + "ies"
	case strings.HasSuffix(w, "s"), strings.HasSuffix(w, "x"), strings.HasSuffix(w, "z"),
		strings.HasSuffix(w, "ch"), strings.HasSuffix(w, "sh"):
		return w + "es"
	}
	return w + "s"
}

func suffixED(w string) string {
	switch {
	case consonantY(w):
		return w[:len(w)-1] + "ied"
	case strings.HasSuffix(w, "e"):
		return w + "d"
	}
	return w + "ed"
}

func suffixING(w string) string {
	switch {
	case strings.HasSuffix(w, "ie"):
		return w[:len(w)-2] + "ying"
	case strings.HasSuffix(w, "ee"), strings.HasSuffix(w, "ye"), strings.HasSuffix(w, "oe"):
		return w + "ing"
	case strings.HasSuffix(w, "e"):
		return w[:len(w)-1] + "ing"
	}
	return w + "ing"
}

func comparative(w string) string {
	switch {
	case consonantY(w):
		return w[:len(w)-1] + "ier"
	case strings.HasSuffix(w, "e"):
		return w + "r"
	}
	return w + "er"
}

func superlative(w string) string {
	switch {
	case consonantY(w):
		return w[:len(w)-1] + "iest"
	case strings.HasSuffix(w, "e"):
		return w + "st"
	}
	return w + "est"
}
