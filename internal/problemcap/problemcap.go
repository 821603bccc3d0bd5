// Package problemcap bounds how many problems one input reports, one rule
// for every parser: a file of bad lines gives at most PerFile messages and
// one more that counts the rest, so that it fills neither memory nor the log.
package problemcap

import "fmt"

// PerFile is the most problems of one input reported one by one.
const PerFile = 100

// Counter counts the problems of one input. The zero value is ready; a
// new input needs a new Counter.
type Counter struct {
	n          int
	firstLater int // line of the first problem not kept
}

// Keep counts a problem found at line and reports whether it is to be
// reported. The message of one that is not need not even be built: for a
// large bad file, building them took most of the time spent on it.
func (c *Counter) Keep(line int) bool {
	c.n++
	if c.n == PerFile+1 {
		c.firstLater = line
	}
	return c.n <= PerFile
}

// Rest returns the message that counts the problems not kept and the line
// of the first of them; ok is false when every problem was kept.
func (c *Counter) Rest() (line int, msg string, ok bool) {
	n := c.n - PerFile
	if n <= 0 {
		return 0, "", false
	}
	if n == 1 {
		return c.firstLater, "1 further problem from here on is not reported", true
	}
	return c.firstLater, fmt.Sprintf("%d further problems from here on are not reported", n), true
}
