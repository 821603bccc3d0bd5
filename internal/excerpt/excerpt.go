// Package excerpt is how much of a hostile input an error message quotes:
// one rule for every parser, so that a bad line megabytes long makes a
// short message.
package excerpt

// Max is the most bytes of the input a message quotes.
const Max = 64

// Of returns s, or its first Max bytes followed by "..." when it is longer.
func Of(s string) string {
	if len(s) > Max {
		return s[:Max] + "..."
	}
	return s
}
