package imgtool

import (
	"strings"
	"testing"
)

// FuzzParseSize: sizes from the command line and -o never panic, and an
// accepted size is non-negative.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1G", "1.5M", "100", "8E", "0.5k", "", "1..2", "99999999999999999999T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := parseSize(s); err == nil && v < 0 {
			t.Fatalf("parseSize(%q) = %d", s, v)
		}
	})
}

// FuzzArgs: option parsing and -o splitting never panic on any argument
// vector, and every operand comes back.
func FuzzArgs(f *testing.F) {
	f.Add("-f\x00qcow2\x00--output=json\x00-oa=b,,c\x00file\x00--\x00-x")
	f.Add("--output\x00-\x00-q\x00--shrink=1")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		p, err := optSpec{short: "f:qo:", long: []string{"output=", "shrink"}}.parse(args)
		if err == nil {
			for _, v := range p.opts["o"] {
				parseKV(v)
			}
		}
	})
}
