//go:build amd64

package pc

import (
	"fmt"
	"strings"
	"time"
)

// setupClock times the steps of building a machine, for the -v line that
// says how long the build took: nested, every step costs L1 emulated time,
// and the breakdown says which one to look at.
type setupClock struct {
	last  time.Time
	steps []string
}

func newSetupClock() *setupClock { return &setupClock{last: time.Now()} }

// step ends the step called name, started at the previous step's end.
func (c *setupClock) step(name string) {
	now := time.Now()
	c.steps = append(c.steps, fmt.Sprintf("%s %v", name, now.Sub(c.last).Round(100*time.Microsecond)))
	c.last = now
}

func (c *setupClock) String() string { return strings.Join(c.steps, ", ") }
