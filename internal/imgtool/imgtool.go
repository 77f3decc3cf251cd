// Package imgtool is `petrel img`: qemu-img's subcommands, flags, output
// formats and exit codes over Petrel's block layer.
package imgtool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/all"
	"github.com/petrel-vmm/petrel/block/blkdebug"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// tool is one invocation: its output streams and the program name that
// prefixes its messages.
type tool struct {
	stdout, stderr io.Writer
	// prog prefixes error messages where qemu-img prints "qemu-img:".
	prog string
	// imageOpts: the image arguments are --image-opts option strings.
	imageOpts bool
	// secrets are the --object secret values by id (secrets.go).
	secrets map[string][]byte
}

// commonOptions takes the options every subcommand shares: --image-opts
// changes how image arguments are read; --object defines the secrets
// that unlock encrypted images (other object types are refused).
func (t *tool) commonOptions(p *parsed) error {
	t.imageOpts = p.has("image-opts")
	var err error
	if t.secrets, err = parseObjects(p.opts["object"]); err != nil {
		return err
	}
	if p.has("target-image-opts") {
		return fmt.Errorf("--target-image-opts is not supported")
	}
	return nil
}

// subcommand is one qemu-img subcommand: its usage line for `petrel img
// help` and its implementation, which returns the exit code qemu-img
// would (0 success, 1 failure, and the subcommand's own codes for check
// and compare).
type subcommand struct {
	summary string
	run     func(t *tool, args []string) int
}

var subcommands = map[string]subcommand{}

// register adds a subcommand; each file registers its own from init.
func register(name, summary string, run func(t *tool, args []string) int) {
	subcommands[name] = subcommand{summary, run}
}

// Main runs `petrel img ARGS...` and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	return MainAs("petrel img", args, stdout, stderr)
}

// MainAs runs the image tool under another program name: as "qemu-img"
// (petrel invoked through a qemu-img symlink) its messages say "qemu-img:"
// exactly as qemu-img's do.
func MainAs(prog string, args []string, stdout, stderr io.Writer) int {
	t := &tool{stdout: stdout, stderr: stderr, prog: prog}
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
	// An unknown subcommand: qemu-img's message and exit code 1, which
	// iotests see as "Command not found: NAME" in their output.
	c, ok := subcommands[args[0]]
	if !ok {
		t.errorf("Command not found: %s", args[0])
		return 1
	}
	return c.run(t, args[1:])
}

// usage lists the subcommands on stderr, as `petrel img help` (qemu-img's
// long help text is not reproduced; iotests do not read it).
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
	fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, fmt.Sprintf(format, a...))
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

// parsed is a command line after getopt: every option's values in the
// order given (a repeated option keeps them all: -o is cumulative in
// qemu-img, other options take the last), and the operands.
type parsed struct {
	opts map[string][]string // key: letter or long name
	args []string
}

// has reports whether option k (a letter or a long name) was given.
func (p *parsed) has(k string) bool { _, ok := p.opts[k]; return ok }

// get is the last value given for option k, "" when it was not given.
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
		// A long option: --name=value, or --name value when it takes
		// one; getopt_long's messages for a missing or extra argument.
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
		// Short options, clustered as getopt allows ("-qf qcow2",
		// "-fqcow2"): a letter that takes an argument ends the cluster.
		// A lone "-" is an operand.
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

// parseSize reads a size as qemu-img does (qemuopt.ParseSize, QEMU's
// qemu_strtosz); sizes of 2^63 bytes and more are refused.
func parseSize(s string) (int64, error) {
	v, err := qemuopt.ParseSize(s)
	return int64(v), err
}

// cvtnum is qemu-img's cvtnum_full: a size argument between lo and hi,
// with its error messages naming the argument ("image size", "offset").
// It prints the hex-suffix deprecation warning as qemu-img does.
func (t *tool) cvtnum(what, s string, lo, hi int64) (int64, bool) {
	// Two messages as qemu-img: a malformed number gets the suffix help
	// (two lines), one out of range the bounds; a parse overflow counts
	// as out of range.
	v, err := qemuopt.ParseSize(s)
	if err != nil && !errors.Is(err, qemuopt.ErrSizeRange) {
		t.errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what)
		t.errorf("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
		return 0, false
	}
	if err != nil || v > uint64(hi) || int64(v) < lo {
		t.errorf("Invalid %s specified. Must be between %d and %d.", what, lo, hi)
		return 0, false
	}
	if qemuopt.SizeHexSuffix(s) {
		t.errorf("warning: Using a multiplier suffix on hex numbers is deprecated: %s", s)
	}
	return int64(v), true
}

// humanSize prints sizes as qemu's size_to_str.
func humanSize(n int64) string { return qemuopt.FormatSize(n) }

// openImage opens a file for a subcommand, wording errors as qemu-img
// (img_open): every failure reads "Could not open 'NAME': REASON", NAME as
// the user gave it. The spec's open options are added to the caller's
// (a read-only spec makes the open read-only, never the reverse).
func (t *tool) openImage(path, format string, opts block.Options) (block.Image, error) {
	arg := path
	var spec imageSpec
	// json:, file: and --image-opts names carry their own format and
	// open options; -f must agree with a driver they name, and with
	// --image-opts it is refused outright, as qemu-img's img_open.
	var open func(block.Options) (block.Image, error)
	if t.imageOpts || strings.HasPrefix(path, "json:") || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, "blkdebug:") {
		if t.imageOpts && format != "" {
			return nil, fmt.Errorf("--image-opts and --format are mutually exclusive")
		}
		var err error
		if spec, err = parseImageSpec(path, t.imageOpts); err != nil {
			return nil, fmt.Errorf("Could not open '%s': %v", path, err)
		}
		if _, nbd := block.ProtocolOf(spec.path); nbd && spec.open != nil && format != "" && format != spec.format {
			return nil, fmt.Errorf("Could not open '%s': petrel opens NBD exports as raw only, not as %s", path, format)
		}
		if format != "" && spec.format != "" && format != spec.format {
			return nil, fmt.Errorf("Could not open '%s': Cannot use '%s' as format, the image was given as '%s'", path, format, spec.format)
		}
		if spec.format != "" {
			format = spec.format
		}
		opts.ReadOnly = opts.ReadOnly || spec.opts.ReadOnly
		opts.DirectIO = opts.DirectIO || spec.opts.DirectIO
		opts.NoSync = opts.NoSync || spec.opts.NoSync
		opts.NoBacking = opts.NoBacking || spec.opts.NoBacking
		opts.OpenFile = spec.opts.OpenFile
		t.keySecretOptions(&opts, spec.opts)
		path, open = spec.path, spec.open
	}
	opts.Secrets = t.secrets
	if opts.Warn == nil {
		opts.Warn = func(msg string) { fmt.Fprintln(t.stderr, msg) }
	}
	opts.Format = format
	if open != nil {
		// A node that is not a format over a file: an NBD export named
		// by driver options (named in errors as given), null-co, or
		// blkdebug above an image.
		img, err := open(opts)
		if err != nil {
			if _, nbd := block.ProtocolOf(path); nbd {
				return nil, fmt.Errorf("Could not open '%s': %v", arg, err)
			}
			return nil, fmt.Errorf("Could not open '%s': %v", path, openReason(err))
		}
		return img, nil
	}
	if format != "" {
		if _, ok := block.Lookup(format); !ok {
			return nil, fmt.Errorf("Unknown file format '%s'", format)
		}
	}
	if _, isProto := block.ProtocolOf(path); isProto {
		// A network image (nbd:...): nothing to stat.
	} else if _, err := os.Stat(path); err != nil {
		// qemu-img names the file twice: the block layer's message
		// ("Could not open 'F': ERRNO") inside its own.
		return nil, fmt.Errorf("Could not open '%s': Could not open '%s': %s", path, path, errText(err))
	}
	img, err := block.Open(path, opts)
	if err != nil {
		// qemu-img prints the driver's reason alone, without the
		// engine's "opening FORMAT image FILE" context (iotests 036,
		// 054, 080).
		return nil, fmt.Errorf("Could not open '%s': %v", path, openReason(err))
	}
	return img, nil
}

// openReason is an open failure as qemu-img prints it: the driver's
// reason alone, without the engine's "opening FORMAT image FILE" context
// (iotests 036, 054, 080).
func openReason(err error) error {
	var oe *block.OpenError
	if errors.As(err, &oe) {
		return oe.Reason
	}
	return err
}

// errnoText is an I/O error as qemu-img prints it: the C library's text
// for its errno ("Input/output error", after QEMU's error_setg_errno),
// or err's own text when it carries none.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return blkdebug.Strerror(errno)
	}
	return err.Error()
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
