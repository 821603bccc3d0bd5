package problemcap

import "testing"

func TestCounter(t *testing.T) {
	for _, total := range []int{0, 1, PerFile, PerFile + 1, 3*PerFile + 7} {
		var c Counter
		kept := 0
		for line := 1; line <= total; line++ {
			if c.Keep(10 * line) {
				if line > PerFile {
					t.Errorf("%d problems: problem %d kept", total, line)
				}
				kept++
			}
		}
		if want := min(total, PerFile); kept != want {
			t.Errorf("%d problems: %d kept, want %d", total, kept, want)
		}
		line, msg, ok := c.Rest()
		if total <= PerFile {
			if ok {
				t.Errorf("%d problems: rest %d %q", total, line, msg)
			}
			continue
		}
		wantMsg := ""
		switch total {
		case PerFile + 1:
			wantMsg = "1 further problem from here on is not reported"
		case 3*PerFile + 7:
			wantMsg = "207 further problems from here on are not reported"
		}
		if !ok || line != 10*(PerFile+1) || msg != wantMsg {
			t.Errorf("%d problems: rest (%d, %q, %v), want (%d, %q, true)", total, line, msg, ok, 10*(PerFile+1), wantMsg)
		}
	}
}
