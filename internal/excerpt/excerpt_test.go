package excerpt

import (
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("a", Max), strings.Repeat("a", Max)},
		{strings.Repeat("a", Max) + "b", strings.Repeat("a", Max) + "..."},
		{strings.Repeat("x", 1<<20), strings.Repeat("x", Max) + "..."},
	} {
		if got := Of(c.in); got != c.want {
			t.Errorf("Of(%d bytes) = %q, want %q", len(c.in), got, c.want)
		}
	}
}
