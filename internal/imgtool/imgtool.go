// Package imgtool is `petrel img`: qemu-img's subcommands, flags, output
// formats and exit codes over Petrel's block layer.
package imgtool

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sort"
	"strings"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/all"
)

// prog prefixes error messages where qemu-img prints "qemu-img:".
const prog = "petrel img"

// tool is one invocation: its output streams.
type tool struct {
	stdout, stderr io.Writer
}

type subcommand struct {
	summary string
	run     func(t *tool, args []string) int
}

var subcommands = map[string]subcommand{}

func register(name, summary string, run func(t *tool, args []string) int) {
	subcommands[name] = subcommand{summary, run}
}

// Main runs `petrel img ARGS...` and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	t := &tool{stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		t.usage()
		if len(args) == 0 {
			return 1
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-V" {
		fmt.Fprintln(stdout, "petrel img (qemu-img compatible)")
		return 0
	}
	c, ok := subcommands[args[0]]
	if !ok {
		t.errorf("Command not found: %s", args[0])
		return 1
	}
	return c.run(t, args[1:])
}

func (t *tool) usage() {
	fmt.Fprintln(t.stderr, "usage: petrel img COMMAND [OPTIONS] ...")
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(t.stderr, "  %-10s %s\n", n, subcommands[n].summary)
	}
	fmt.Fprintf(t.stderr, "Supported formats: %s\n", strings.Join(block.Formats(), " "))
}

// errorf prints "petrel img: ..." as qemu-img prints "qemu-img: ...".
func (t *tool) errorf(format string, a ...any) {
	fmt.Fprintf(t.stderr, "%s: %s\n", prog, fmt.Sprintf(format, a...))
}

// fail reports err and returns exit code 1.
func (t *tool) fail(format string, a ...any) int {
	t.errorf(format, a...)
	return 1
}

// optSpec describes the options of one subcommand, getopt style: short
// letters followed by ':' take an argument; long names ending in '='
// take one.
type optSpec struct {
	short string
	long  []string
}

type parsed struct {
	opts map[string][]string // key: letter or long name
	args []string
}

func (p *parsed) has(k string) bool { _, ok := p.opts[k]; return ok }

func (p *parsed) get(k string) string {
	v := p.opts[k]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parse permutes options and operands as GNU getopt does (qemu-img
// accepts options after file names); "--" ends options.
func (s optSpec) parse(args []string) (*parsed, error) {
	p := &parsed{opts: map[string][]string{}}
	takesArg := func(c byte) (known, arg bool) {
		i := strings.IndexByte(s.short, c)
		if i < 0 || c == ':' {
			return false, false
		}
		return true, i+1 < len(s.short) && s.short[i+1] == ':'
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			p.args = append(p.args, args[i+1:]...)
			return p, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			found := false
			for _, l := range s.long {
				ln, needs := strings.CutSuffix(l, "=")
				if ln != name {
					continue
				}
				found = true
				if needs && !hasVal {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("option '--%s' requires an argument", name)
					}
					i++
					val = args[i]
				} else if !needs && hasVal {
					return nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
				}
				p.opts[name] = append(p.opts[name], val)
			}
			if !found {
				return nil, fmt.Errorf("unrecognized option '%s'", a)
			}
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				known, needs := takesArg(a[j])
				if !known {
					return nil, fmt.Errorf("invalid option -- '%c'", a[j])
				}
				k := string(a[j])
				if !needs {
					p.opts[k] = append(p.opts[k], "")
					continue
				}
				v := a[j+1:]
				if v == "" {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("option requires an argument -- '%c'", a[j])
					}
					i++
					v = args[i]
				}
				p.opts[k] = append(p.opts[k], v)
				break
			}
		default:
			p.args = append(p.args, a)
		}
	}
	return p, nil
}

// parseSize reads a size with qemu's optional suffix (k/K, M, G, T, P, E;
// b or none for bytes), allowing a fraction ("1.5M").
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty size")
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	case 'P':
		mult = 1 << 50
	case 'E':
		mult = 1 << 60
	case 'b', 'B':
	default:
		if s[len(s)-1] < '0' || s[len(s)-1] > '9' {
			return 0, fmt.Errorf("invalid size suffix in %q", s)
		}
		s += "b"
	}
	num := s[:len(s)-1]
	whole, frac, hasFrac := strings.Cut(num, ".")
	if whole == "" || strings.Trim(whole, "0123456789") != "" || (hasFrac && strings.Trim(frac, "0123456789") != "") {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	var w int64
	for _, c := range whole {
		if w > (1<<62)/10 {
			return 0, fmt.Errorf("size %q too large", s)
		}
		w = w*10 + int64(c-'0')
	}
	if w > (1<<63-1)/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	v := w * mult
	if hasFrac && frac != "" {
		if mult == 1 {
			return 0, fmt.Errorf("fractional byte count %q", s)
		}
		f, d := int64(0), int64(1)
		for _, c := range frac[:min(len(frac), 9)] {
			f, d = f*10+int64(c-'0'), d*10
		}
		// f < d, so f*mult/d < mult and the 128-bit quotient fits.
		hi, lo := bits.Mul64(uint64(f), uint64(mult))
		q, _ := bits.Div64(hi, lo, uint64(d))
		if v > 1<<63-1-int64(q) {
			return 0, fmt.Errorf("size %q too large", s)
		}
		v += int64(q)
	}
	return v, nil
}

// humanSize prints sizes as qemu's size_to_str: the unit keeps the value
// under 1000, with 3 significant digits ("1 GiB", "1.5 MiB", "0.977 MiB").
func humanSize(n int64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	_, e := math.Frexp(float64(n) / (1000.0 / 1024.0))
	i := max(0, min((e-1)/10, len(suffixes)-1))
	return fmt.Sprintf("%.3g %sB", float64(n)/float64(int64(1)<<(10*i)), suffixes[i])
}

// openImage opens a file for a subcommand, wording errors as qemu-img.
func (t *tool) openImage(path, format string, opts block.Options) (block.Image, error) {
	opts.Format = format
	if format != "" {
		if _, ok := block.Lookup(format); !ok {
			return nil, fmt.Errorf("Unknown file format '%s'", format)
		}
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("Could not open '%s': %s", path, errText(err))
	}
	img, err := block.Open(path, opts)
	if err != nil {
		return nil, fmt.Errorf("Could not open '%s': %v", path, err)
	}
	return img, nil
}

// errText strips Go's "op path:" prefix from OS errors.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, os.ErrNotExist) {
			return "No such file or directory"
		}
		return pe.Err.Error()
	}
	return err.Error()
}

// cacheMode maps qemu-img's -t/-T cache modes to block options:
// none/directsync use O_DIRECT, unsafe skips fdatasync.
func cacheMode(mode string, o *block.Options) error {
	switch mode {
	case "", "writeback", "writethrough":
	case "unsafe":
		o.NoSync = true
	case "none", "directsync":
		o.DirectIO = true
	default:
		return fmt.Errorf("Invalid cache option: %s", mode)
	}
	return nil
}

// cacheDirect reports whether a cache mode uses O_DIRECT.
func cacheDirect(mode string) (bool, error) {
	var o block.Options
	err := cacheMode(mode, &o)
	return o.DirectIO, err
}

// sameFile reports whether two paths name the same file.
func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
